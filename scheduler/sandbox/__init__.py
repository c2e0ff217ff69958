"""Local stand-ins for the outside world, served over real HTTP on loopback.

The provider simulator is the independent referee of the limiter: it enforces its own
quota with its own window code (nothing from `scheduler/` but a plan's numbers), in
simulated time, and answers in each provider's real shapes. See `clock` for how
simulated instants map onto the wall-clock reset times it prints. The fake GitHub
(`scheduler.sandbox.github`) plays the same part for the GitHub client and sinks.
"""

from scheduler.sandbox.github import (
    DEV_GITHUB_TOKEN,
    SECONDARY_RATE_LIMIT_MESSAGE,
    FakeGitHub,
    FakeGitHubConfig,
    create_github_app,
)
from scheduler.sandbox.provider.app import CHAT_PATHS, create_provider_app
from scheduler.sandbox.provider.clock import SimClock
from scheduler.sandbox.provider.config import (
    BASE_PATHS,
    DEFAULT_MODELS,
    DEV_KEY,
    Faults,
    Flavour,
    Latency,
    ProviderConfig,
)
from scheduler.sandbox.provider.flavours import SYNTHETIC_CREDITS_MESSAGE, SYNTHETIC_LIMIT_MESSAGE
from scheduler.sandbox.provider.review import parse_diff, review_content
from scheduler.sandbox.provider.state import Simulator
from scheduler.sandbox.provider.windows import max_used_in_any_window
from scheduler.sandbox.server import ServerHandle, is_loopback, serve_in_thread

__all__ = [
    "BASE_PATHS",
    "CHAT_PATHS",
    "DEFAULT_MODELS",
    "DEV_GITHUB_TOKEN",
    "DEV_KEY",
    "SECONDARY_RATE_LIMIT_MESSAGE",
    "SYNTHETIC_CREDITS_MESSAGE",
    "SYNTHETIC_LIMIT_MESSAGE",
    "FakeGitHub",
    "FakeGitHubConfig",
    "Faults",
    "Flavour",
    "Latency",
    "ProviderConfig",
    "ServerHandle",
    "SimClock",
    "Simulator",
    "create_github_app",
    "create_provider_app",
    "is_loopback",
    "max_used_in_any_window",
    "parse_diff",
    "review_content",
    "serve_in_thread",
]
