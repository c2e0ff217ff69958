"""What the limiter answers: a grant or a denial, and the read-only status snapshot.

Plain frozen values with no Redis in them, so callers (workers, `inspect`, metrics)
can pass them around, compare them and test against them without a server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

__all__ = [
    "AcquireResult",
    "BlockStatus",
    "Denial",
    "DenialReason",
    "Grant",
    "LeaseStatus",
    "LimiterStatus",
    "WindowStatus",
]


class DenialReason(StrEnum):
    """The constraint that sets a denial's wait (docs/limiter.md, "acquire"). A
    StrEnum, so code and logs that compare or print the plain strings keep working."""

    COOLDOWN = "cooldown"  # the provider's block is active
    CONCURRENCY = "concurrency"  # the cap's slots are all held by live leases
    WINDOW = "window"  # the window's spendable part is full
    RESERVE = "reserve"  # the PR is over its share and the rest is reserved for others
    PR_SHARE = "pr_share"  # the same, where the PR's own use freeing up comes first


@dataclass(frozen=True, slots=True)
class Grant:
    """Budget taken. Keep `lease_id` to renew and release the concurrency slot."""

    lease_id: str
    request_id: str
    remaining: dict[str, int]
    replayed: bool
    now_ms: int
    granted: Literal[True] = True


@dataclass(frozen=True, slots=True)
class Denial:
    """Nothing was charged. `retry_after_ms` is the exact wait if nothing else changes;
    None means this cost can never fit the plan (it exceeds a window's spendable part).
    `window` names the window behind a `window`, `reserve` or `pr_share` reason."""

    reason: DenialReason
    window: str | None
    retry_after_ms: int | None
    now_ms: int
    granted: Literal[False] = False


AcquireResult = Grant | Denial


@dataclass(frozen=True, slots=True)
class WindowStatus:
    name: str
    kind: str
    unit: str
    limit: int
    spendable: int
    used: int
    next_free_at_ms: int | None
    pr_used: dict[str, int] = field(default_factory=dict)
    # The reserve in force (milli-units): PRs over their share stop at spendable minus
    # this. `adaptive`: set by the waker from demand, else the configured fixed one.
    reserve: int = 0
    reserve_adaptive: bool = False


@dataclass(frozen=True, slots=True)
class LeaseStatus:
    lease_id: str
    deadline_ms: int


@dataclass(frozen=True, slots=True)
class BlockStatus:
    until_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class LimiterStatus:
    account: str
    now_ms: int
    concurrency: int | None
    windows: list[WindowStatus]
    leases: list[LeaseStatus]
    block: BlockStatus | None
    # What the adaptive reserve was last sized from (docs/reserve.md), else None.
    reserve_demand: dict[str, Any] | None = None
