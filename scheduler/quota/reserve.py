"""The adaptive reserve: how much of each window to hold back for PRs under their share,
sized from demand (docs/reserve.md).

A fixed reserve idles budget whenever only large PRs are queued: they may not touch it
and nobody else needs it. Here the reserve in force follows an estimate of the work
under share, between a configured floor and ceiling; the limiter's Lua reads it from
the account's state at each grant, so the rule stays one atomic decision. This module
is the arithmetic only; `scheduler.waker.reserve` gathers the demand and sets it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scheduler.quota.units import parse_duration_ms, resolve_aliases

__all__ = [
    "AdaptiveReserve",
    "Bursts",
    "Demand",
    "PrDemand",
    "bursts",
    "is_large",
    "lend_until",
    "reserve_milli",
    "size_reserve",
]


def _ms(value: Any) -> Any:
    """A duration such as "5h" or "60s", or milliseconds as a number."""
    return parse_duration_ms(value) if isinstance(value, str) else value


class AdaptiveReserve(BaseModel):
    """`[accounts.policy.adaptive]`: the reserve follows demand within [floor, ceiling]
    (fractions of each window's limit, as `reserve` is). Without it the reserve is the
    fixed `reserve`, as before.

    `horizon`: how long a burst of small PRs is remembered (the reserve holds the
    largest one seen within it); `interval`: how often the waker sizes the reserve
    again; `lend_within`: while no next burst is due (fewer than two bursts seen, or
    the due one late), the room lent out must be back within this long, so a burst
    nobody predicted waits at most this long for it. Defaults: the horizon is the
    plan's longest window (None here, resolved by `horizon_for`), so a quiet stretch
    as long as the longest window lends the whole reserve back (docs/reserve.md, "Why
    this design"); the interval a minute, small against any window yet a cheap loop
    (one read per recent PR); `lend_within` 0, nothing lent before a burst is due:
    how long an unpredicted burst may wait is the operator's trade to make."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    floor: float = Field(default=0.0, ge=0, lt=1)
    ceiling: float | None = Field(default=None, ge=0, lt=1)
    horizon_ms: int | None = Field(default=None, gt=0)
    interval_ms: int = Field(default=60_000, gt=0)
    lend_within_ms: int = Field(default=0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _durations(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return resolve_aliases(
            data,
            (
                ("horizon", "horizon_ms", _ms),
                ("interval", "interval_ms", _ms),
                ("lend_within", "lend_within_ms", _ms),
            ),
        )

    @model_validator(mode="after")
    def _ordered(self) -> AdaptiveReserve:
        if self.ceiling is not None and self.ceiling < self.floor:
            raise ValueError(f"ceiling ({self.ceiling}) must not be below floor ({self.floor})")
        return self

    def scaled(self, scale: float) -> AdaptiveReserve:
        """Durations divided by `scale` (a time-compressed simulation)."""
        horizon = None if self.horizon_ms is None else max(1, round(self.horizon_ms / scale))
        return self.model_copy(
            update={
                "horizon_ms": horizon,
                "interval_ms": max(1, round(self.interval_ms / scale)),
                "lend_within_ms": round(self.lend_within_ms / scale),
            }
        )

    def horizon_for(self, window_ms: Iterable[int]) -> int:
        """The horizon in force for a plan of windows `window_ms` long: the configured
        one, else the longest window (a plan without any: the interval)."""
        if self.horizon_ms is not None:
            return self.horizon_ms
        return max(window_ms, default=self.interval_ms)


def reserve_milli(limit_milli: int, headroom: float, fraction: float) -> int:
    """The reserve of `fraction` in milli-units: what lies between the spendable cap and
    the line over-share PRs stop at, `floor(L(1-h)) - floor(L(1-h-f))`, exactly as a
    fixed reserve of `fraction` draws it (`Policy.caps`)."""
    h, f = Fraction(repr(float(headroom))), Fraction(repr(float(fraction)))
    return math.floor(limit_milli * (1 - h)) - math.floor(limit_milli * (1 - h - f))


@dataclass(frozen=True, slots=True)
class PrDemand:
    """One recent or open PR as the controller sees it: when it arrived, its estimated
    cost per window (milli-units), what it has spent per window, and whether its work
    is still open."""

    arrived_ms: int
    estimate: Mapping[str, int]
    used: Mapping[str, int]
    open: bool


@dataclass(frozen=True, slots=True)
class Demand:
    """The estimate behind one window's reserve, milli-units: `recent` is the largest
    burst of small PRs' work within the horizon, `queued` the work open PRs have still
    to do; `reserve` what is in force; `lent` whether the burst's part is lent to the
    large PRs whole (a unit spent now leaves this window before the next burst is
    due); `leaving` the use that leaves it by then anyway, which lends that much."""

    recent: int
    queued: int
    reserve: int
    lent: bool = False
    leaving: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "recent": self.recent,
            "queued": self.queued,
            "reserve": self.reserve,
            "lent": int(self.lent),
            "leaving": self.leaving,
        }


@dataclass(frozen=True, slots=True)
class Bursts:
    """When the last burst of small PRs started and when the next is due (None until
    two bursts have been seen)."""

    last_start: int
    due: int | None


def bursts(arrived: Iterable[int], now_ms: int, horizon_ms: int, span_ms: int) -> Bursts | None:
    """The bursts within the horizon (None: no arrival in it). A burst starts at an
    arrival a span or more after the one before; the next is due the shortest gap
    between starts after the last start. One burst, or a steady stream, gives no due
    time: nothing says when a quiet spell ends."""
    times = sorted(t for t in arrived if 0 <= now_ms - t < horizon_ms)
    if not times:
        return None
    starts = [t for i, t in enumerate(times) if i == 0 or t - times[i - 1] >= span_ms]
    if len(starts) < 2:
        return Bursts(starts[-1], None)
    return Bursts(starts[-1], starts[-1] + min(b - a for a, b in pairwise(starts)))


def lend_until(seen: Bursts | None, now_ms: int, lend_within_ms: int) -> int | None:
    """When room lent to the large PRs now must be back (None: lend nothing). With a
    next burst due, by then; with none due (one burst seen, or the due one late),
    within `lend_within_ms`, the longest an unpredicted burst is let wait for it."""
    if seen is None:
        return None
    if seen.due is not None and seen.due > now_ms:
        return seen.due
    return now_ms + lend_within_ms if lend_within_ms > 0 else None


def size_reserve(
    prs: Iterable[PrDemand],
    now_ms: int,
    window: str,
    share: int,
    bounds: tuple[int, int],
    horizon_ms: int,
    span_ms: int,
    *,
    window_ms: int = 0,
    seen: Bursts | None = None,
    back_by: int | None = None,
    leaving: int = 0,
    interval_ms: int = 0,
) -> Demand:
    """One window's reserve: room for a burst like the largest recent one, or for
    the work queued now if that is more, clamped to `bounds` (floor, ceiling); less
    where room lent out now is back by `back_by` (`lend_until`).

    `prs` are the small ones (`is_large` is false): a large PR never spends the
    reserve, so it is no demand on it. Work counts under its share only
    (`min(estimate, share)`). `recent` is the largest burst seen within the horizon:
    the most work of PRs that arrived within `span_ms` of each other (the plan's
    shortest window). `queued` is the work open PRs have still to do
    (`min(estimate, share) - used`), whatever their age; a burst being served is in
    both, so the larger counts, not the sum.

    Lending. The next burst needs its room at `back_by`, the work queued now (and
    what the burst under way, since `seen.last_start`, may still bring) needs it now.
    A unit spent now in this window (`window_ms` long) is back by `back_by` if
    `now + interval + window_ms <= back_by`: then the next burst's room is lent
    whole (`lent`). Otherwise the use that leaves the window by `back_by` anyway
    (`leaving`, from the limiter, counting only charges still there a whole
    `interval_ms` from now, as the controller sizes again only then) gives the burst
    its room back in time: only the rest is held. Never more than without lending.
    A 24 h window lends nothing to bursts 8 h apart unless its old charges leave
    before the next one; a quiet stretch longer than the horizon forgets the bursts
    and lends it all back."""
    arrivals: list[tuple[int, int]] = []
    queued = 0
    for pr in prs:
        under = min(_estimate(pr.estimate, window), share)
        if 0 <= now_ms - pr.arrived_ms < horizon_ms:
            arrivals.append((pr.arrived_ms, under))
        if pr.open:
            queued += max(0, under - pr.used.get(window, 0))
    recent = _largest_burst(sorted(arrivals), span_ms)
    wanted = held = max(recent, queued)
    lent = back_by is not None and now_ms + interval_ms + window_ms <= back_by
    if back_by is not None:
        start = seen.last_start if seen is not None else now_ms
        under_way = sum(work for t, work in arrivals if t >= start)
        now_needs = max(0, recent - under_way) + queued
        wanted = now_needs if lent else min(held, now_needs + max(0, recent - leaving))
    low, high = bounds
    return Demand(recent, queued, min(high, max(low, wanted)), lent, leaving)


def _largest_burst(arrivals: list[tuple[int, int]], span_ms: int) -> int:
    """The most work among `arrivals` (by time) that arrived within `span_ms`: the
    largest sum over (t - span, t] with t an arrival."""
    best = total = first = 0
    for t, work in arrivals:
        total += work
        while arrivals[first][0] <= t - span_ms:
            total -= arrivals[first][1]
            first += 1
        best = max(best, total)
    return best


def is_large(estimate: Mapping[str, int], shares: Mapping[str, int]) -> bool:
    """Whether a PR's estimated work exceeds its share (`shares`: window -> share,
    milli-units) in some window. Under an adaptive reserve such a PR never spends the
    reserve, not even its first share, and its arrival is no demand on it: a large PR
    that arrives when the others have spent up to the line would otherwise take the
    reserve kept for the next burst of small PRs (docs/reserve.md). A PR with no
    estimate is not large: nothing says it is."""
    return bool(estimate) and any(_estimate(estimate, w) > s for w, s in shares.items())


def _estimate(estimate: Mapping[str, int], window: str) -> int:
    """A PR's estimated cost in `window`; a window the plan job did not estimate (a
    fallback account's) takes the PR's largest estimate, the cautious guess."""
    if window in estimate:
        return max(0, int(estimate[window]))
    return max((max(0, int(v)) for v in estimate.values()), default=0)
