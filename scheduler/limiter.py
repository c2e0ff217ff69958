"""The limiter's documented import path (README, "Limiter"): its home is
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
