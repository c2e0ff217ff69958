"""The limiter's documented import path (docs/architecture.md, "The limiter"): its home is
`scheduler.quota.limiter`."""

from scheduler.quota.limiter import (
    AcquireResult,
    BlockStatus,
    Denial,
    DenialReason,
    Grant,
    LeaseStatus,
    Limiter,
    LimiterStatus,
    WindowStatus,
)

__all__ = [
    "AcquireResult",
    "BlockStatus",
    "Denial",
    "DenialReason",
    "Grant",
    "LeaseStatus",
    "Limiter",
    "LimiterStatus",
    "WindowStatus",
]
