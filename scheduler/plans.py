"""Plans' documented import path (docs/architecture.md, "The limiter"): their home is
`scheduler.quota.plans`."""

from scheduler.quota.plans import (
    PRESETS,
    Account,
    ModelCost,
    Plan,
    Policy,
    Window,
    get_preset,
    parse_duration_ms,
    to_milli,
)

__all__ = [
    "PRESETS",
    "Account",
    "ModelCost",
    "Plan",
    "Policy",
    "Window",
    "get_preset",
    "parse_duration_ms",
    "to_milli",
]
