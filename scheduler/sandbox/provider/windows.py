"""The simulator's own quota accounting: deliberately plain, and shared with nothing.

The simulator is the referee that proves the Redis limiter right, so none of this
comes from `scheduler/` (only the plan's numbers do). A rolling window is a list of
`(time, cost)` admissions pruned by age; a regenerating window is a bucket with a
level and the time of its last tick. Times are simulated seconds, amounts milli-units.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from scheduler.quota.plans import Window

__all__ = [
    "Bucket",
    "RollingLog",
    "SimWindow",
    "build_window",
    "max_used_in_any_window",
    "preload",
]


@dataclass
class RollingLog:
    """A charge counts from its admission `t` while `now < t + duration`."""

    name: str
    limit: int
    duration: float
    unit: str
    entries: deque[tuple[float, int]] = field(default_factory=deque)
    kind: Literal["rolling"] = field(default="rolling", init=False)

    def _prune(self, now: float) -> None:
        while self.entries and self.entries[0][0] + self.duration <= now:
            self.entries.popleft()

    def used(self, now: float) -> int:
        self._prune(now)
        return sum(cost for _, cost in self.entries)

    def charge(self, now: float, cost: int) -> None:
        self._prune(now)
        self.entries.append((now, cost))

    def free_at(self, now: float, cost: int) -> float | None:
        """When `cost` first fits; None if it never can (more than the whole limit)."""
        if cost > self.limit:
            return None
        excess = self.used(now) + cost - self.limit
        if excess <= 0:
            return now
        for t, spent in self.entries:
            excess -= spent
            if excess <= 0:
                return t + self.duration
        raise AssertionError("unreachable: the log holds more than the excess")

    def next_release(self, now: float) -> tuple[float, int] | None:
        """(when, how much) budget next comes back, or None if nothing is spent."""
        self._prune(now)
        if not self.entries:
            return None
        first = self.entries[0][0]
        return first + self.duration, sum(c for t, c in self.entries if t == first)

    def empty_at(self, now: float) -> float:
        """When every current charge has expired."""
        self._prune(now)
        return self.entries[-1][0] + self.duration if self.entries else now

    def bound(self) -> int:
        """The most a correct client can have admitted in any window-length span."""
        return self.limit


@dataclass
class Bucket:
    """Regains `regen` every `tick` seconds, capped at `limit`.

    The tick clock starts when a full bucket is first drawn from (a full bucket has no
    pending tick): a tick is never early relative to the spend that made room for it.
    """

    name: str
    limit: int
    duration: float
    unit: str
    tick: float
    regen: int
    level: int = field(init=False)
    anchor: float = field(default=0.0, init=False)
    kind: Literal["regenerating"] = field(default="regenerating", init=False)

    def __post_init__(self) -> None:
        self.level = self.limit  # a new bucket starts full

    def _catch_up(self, now: float) -> None:
        if self.level < self.limit:
            ticks = math.floor((now - self.anchor) / self.tick)
            if ticks > 0:
                self.level = min(self.limit, self.level + ticks * self.regen)
                self.anchor += ticks * self.tick
        if self.level >= self.limit:
            self.level, self.anchor = self.limit, now

    def used(self, now: float) -> int:
        self._catch_up(now)
        return self.limit - self.level

    def charge(self, now: float, cost: int) -> None:
        self._catch_up(now)
        self.level -= cost

    def free_at(self, now: float, cost: int) -> float | None:
        self._catch_up(now)
        if cost > self.limit:
            return None
        if cost <= self.level:
            return now
        return self.anchor + math.ceil((cost - self.level) / self.regen) * self.tick

    def next_release(self, now: float) -> tuple[float, int] | None:
        self._catch_up(now)
        if self.level >= self.limit:
            return None
        return self.anchor + self.tick, min(self.regen, self.limit - self.level)

    def empty_at(self, now: float) -> float:
        """When the bucket is full again (nothing counts as used)."""
        self._catch_up(now)
        return self.anchor + math.ceil((self.limit - self.level) / self.regen) * self.tick

    def bound(self) -> int:
        """Full at the start of a span, plus every tick that can land inside it."""
        return self.limit + self.regen * math.ceil(self.duration / self.tick)


SimWindow = RollingLog | Bucket


def build_window(spec: Window, *, packs: int = 1) -> SimWindow:
    """A fresh, empty window from a plan's numbers (milli-units, ms -> seconds)."""
    limit = spec.limit_milli * packs
    duration = spec.duration_ms / 1000
    if spec.kind == "rolling":
        return RollingLog(spec.name, limit, duration, spec.unit)
    if spec.tick_ms is None or spec.tick_percent is None:
        raise ValueError(f"window {spec.name!r}: a regenerating window needs a tick")
    regen = max(1, round(limit * spec.tick_percent / 100))
    return Bucket(spec.name, limit, duration, spec.unit, spec.tick_ms / 1000, regen)


def preload(window: SimWindow, admissions: Iterable[tuple[float, int]], now: float) -> None:
    """Charge past admissions into a new window, so a quota change forgets no spending.

    A bucket has no history to replay ticks against, so it takes every admission still
    inside its duration at once: it may start emptier than the provider would be.
    """
    for t, cost in admissions:
        if t + window.duration <= now:
            continue
        if isinstance(window, RollingLog):
            window.entries.append((t, cost))
        else:
            window.charge(now, cost)


def max_used_in_any_window(admissions: Sequence[tuple[float, int]], duration: float) -> int:
    """Exact maximum total cost admitted inside any span `[s, s + duration)`.

    Some maximal span starts at an admission, so a two-pointer sweep over admissions
    sorted by time finds it: for each start, add everything before `start + duration`.
    """
    if duration <= 0:
        raise ValueError(f"duration must be positive, got {duration!r}")
    ordered = sorted(admissions)
    best = running = 0
    end = 0
    for start, (t0, _) in enumerate(ordered):
        while end < len(ordered) and ordered[end][0] < t0 + duration:
            running += ordered[end][1]
            end += 1
        best = max(best, running)
        running -= ordered[start][1]
    return best
