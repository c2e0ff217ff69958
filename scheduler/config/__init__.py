"""Configuration: the settings models, and reading them from a TOML file and the
environment with errors a person can act on.

API keys never live in the file or in these models: each account names the environment
variable that holds its key, and `api_key` reads it only when a request is about to be
made. Every message shows secrets through `redact`/`redact_url`.
"""

from scheduler.config.errors import ConfigError
from scheduler.config.loader import DEFAULT_CONFIG, find_config, load_settings
from scheduler.config.planning import PlanningConfig, RepoOverride
from scheduler.config.redact import redact, redact_url
from scheduler.config.redisconn import connect_redis
from scheduler.config.review import (
    DEFAULT_MAX_COMMENT_CHARS,
    DEFAULT_MAX_COMMENTS,
    DEFAULT_MODELS,
    Fairness,
    ReviewSettings,
)
from scheduler.config.settings import AccountConfig, Settings, api_key
from scheduler.config.webhook import WebhookSettings

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_MAX_COMMENTS",
    "DEFAULT_MAX_COMMENT_CHARS",
    "DEFAULT_MODELS",
    "AccountConfig",
    "ConfigError",
    "Fairness",
    "PlanningConfig",
    "RepoOverride",
    "ReviewSettings",
    "Settings",
    "WebhookSettings",
    "api_key",
    "connect_redis",
    "find_config",
    "load_settings",
    "redact",
    "redact_url",
]
