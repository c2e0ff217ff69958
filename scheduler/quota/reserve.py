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
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scheduler.quota.units import parse_duration_ms

__all__ = ["AdaptiveReserve", "Demand", "PrDemand", "reserve_milli", "size_reserve"]


def _ms(value: Any) -> Any:
    """A duration such as "5h" or "60s", or milliseconds as a number."""
    return parse_duration_ms(value) if isinstance(value, str) else value


class AdaptiveReserve(BaseModel):
    """`[accounts.policy.adaptive]`: the reserve follows demand within [floor, ceiling]
    (fractions of each window's limit, as `reserve` is). Without it the reserve is the
    fixed `reserve`, as before.

    `horizon`: how long a PR's arrival keeps counting in the estimate, its weight
    falling linearly to 0; `interval`: how often the waker sizes the reserve again.
    Defaults: the horizon is the plan's longest window (None here, resolved by
    `horizon_for`): a unit lent to a PR over its share comes back only when the
    longest window lets it go, so demand is remembered that long (docs/reserve.md,
    "Why this design"); the interval a minute, small against any window yet a cheap
    loop (one read per recent PR)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    floor: float = Field(default=0.0, ge=0, lt=1)
    ceiling: float | None = Field(default=None, ge=0, lt=1)
    horizon_ms: int | None = Field(default=None, gt=0)
    interval_ms: int = Field(default=60_000, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _durations(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for src, dst in (("horizon", "horizon_ms"), ("interval", "interval_ms")):
                if src in data:
                    if dst in data:
                        raise ValueError(f"give {src!r} or {dst!r}, not both")
                    try:
                        data[dst] = _ms(data.pop(src))
                    except ValueError as exc:
                        raise ValueError(f"{src!r}: {exc}") from None
        return data

    @model_validator(mode="after")
    def _ordered(self) -> AdaptiveReserve:
        if self.ceiling is not None and self.ceiling < self.floor:
            raise ValueError(f"ceiling ({self.ceiling}) must not be below floor ({self.floor})")
        return self

    def scaled(self, scale: float) -> AdaptiveReserve:
        """Durations divided by `scale` (a time-compressed simulation)."""
        horizon = None if self.horizon_ms is None else max(1, round(self.horizon_ms / scale))
        return self.model_copy(
            update={"horizon_ms": horizon, "interval_ms": max(1, round(self.interval_ms / scale))}
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
    """The estimate behind one window's reserve, milli-units: `recent` is the decayed
    work of the small PRs that arrived within the horizon, `queued` the under-share
    work open PRs have still to do; `reserve` what is in force."""

    recent: int
    queued: int
    reserve: int

    def as_dict(self) -> dict[str, int]:
        return {"recent": self.recent, "queued": self.queued, "reserve": self.reserve}


def size_reserve(
    prs: Iterable[PrDemand],
    now_ms: int,
    window: str,
    share: int,
    bounds: tuple[int, int],
    horizon_ms: int,
) -> Demand:
    """One window's reserve: `recent + queued`, clamped to `bounds` (floor, ceiling).

    `recent` is the work under their share (`min(estimate, share)`) of the PRs that
    arrived within the horizon, each weighed by `1 - age / horizon`: arrivals come in
    bursts, so one keeps the reserve up for a while after it is served (another may
    follow), and a quiet stretch lends it back. A large PR counts its first share: that
    much of it runs under its share and may spend the reserve, so the next large PR's
    arrival is demand on the reserve as much as a small one. `queued` is the work under
    their share that open PRs have still to do, whatever their age and size
    (`min(estimate, share) - used`). What a PR does beyond its share never counts: it
    never touches the reserve."""
    recent = Fraction(0)
    queued = 0
    for pr in prs:
        under = min(_estimate(pr.estimate, window), share)
        age = now_ms - pr.arrived_ms
        if 0 <= age < horizon_ms:
            recent += under * Fraction(horizon_ms - age, horizon_ms)
        if pr.open:
            queued += max(0, under - pr.used.get(window, 0))
    low, high = bounds
    wanted = math.ceil(recent) + queued
    return Demand(math.ceil(recent), queued, min(high, max(low, wanted)))


def _estimate(estimate: Mapping[str, int], window: str) -> int:
    """A PR's estimated cost in `window`; a window the plan job did not estimate (a
    fallback account's) takes the PR's largest estimate, the cautious guess."""
    if window in estimate:
        return max(0, int(estimate[window]))
    return max((max(0, int(v)) for v in estimate.values()), default=0)
