"""Provider responses, reduced to what the scheduler needs: a class and a reset time.

Kept apart from the HTTP client so every rule can be tested from recorded bodies
alone, and so the scheduler stays the only place that decides to retry.
"""

from workers.providers.classify import Classified, ResponseClass, Usage, WindowHint, classify
from workers.providers.resets import (
    BEIJING,
    DEFAULT_MARGIN_MS,
    DEFAULT_MAX_HORIZON_MS,
    parse_epoch,
    parse_go_duration_ms,
    parse_iso8601,
    parse_retry_after,
    parse_retry_after_ms,
    parse_zai_message,
    reset_from_response,
    synthetic_limited,
    synthetic_reset,
    zai_quota_reset,
)

__all__ = [
    "BEIJING",
    "DEFAULT_MARGIN_MS",
    "DEFAULT_MAX_HORIZON_MS",
    "Classified",
    "ResponseClass",
    "Usage",
    "WindowHint",
    "classify",
    "parse_epoch",
    "parse_go_duration_ms",
    "parse_iso8601",
    "parse_retry_after",
    "parse_retry_after_ms",
    "parse_zai_message",
    "reset_from_response",
    "synthetic_limited",
    "synthetic_reset",
    "zai_quota_reset",
]
