"""The price of time: peak and off-peak factors, the calendar they are read on, and the
per-account policy that moves large reviews to the cheaper hours.

Z.AI's credit plans (V3, from 2026-07-30) charge every call at a factor of the time
the request *arrives*: 1x in peak hours (Monday to Friday 14:00-18:00 UTC+8), 0.5x
otherwise. Reports disagree on the numbers, so every one is a field a config may
override, and none is a constant in logic. A grant is charged the highest factor
between its grant time and its latest arrival (grant plus the arrival margin), so a
request that reaches the provider just after a boundary is never under-reserved.

The calendar maps the limiter's clock (Redis `TIME`, epoch ms) onto the instant the
factors are read at. In a deployment they are the same; a time-compressed simulation
publishes its own mapping (`RedisCalendar`) so the workers, the waker and the
provider simulator all see the same simulated hour.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis as redis_lib
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scheduler.quota.units import parse_duration_ms

__all__ = [
    "IDENTITY",
    "Calendar",
    "OffPeakPolicy",
    "RedisCalendar",
    "TimeFactors",
]

_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_DAY = dt.timedelta(days=1)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _minutes(text: str) -> int:
    match = _CLOCK.match(text)
    if match is None:
        raise ValueError(f"expected a time of day such as '14:00', got {text!r}")
    return int(match[1]) * 60 + int(match[2])


class TimeFactors(_Frozen):
    """When a credit plan charges its peak factor, and what each phase costs.

    `peak_days` are weekdays, Monday = 0, in the plan's own time zone
    (`utc_offset_hours`); a peak period runs from `peak_start` to `peak_end` on each
    of them, every other instant is off-peak."""

    peak_days: tuple[int, ...] = (0, 1, 2, 3, 4)
    peak_start: str = "14:00"
    peak_end: str = "18:00"
    utc_offset_hours: float = Field(default=8.0, ge=-14, le=14)
    peak_factor: float = Field(default=1.0, gt=0, le=100)
    off_peak_factor: float = Field(default=0.5, gt=0, le=100)
    source: str = ""
    as_of: dt.date | None = None

    @field_validator("peak_days")
    @classmethod
    def _weekdays(cls, days: tuple[int, ...]) -> tuple[int, ...]:
        if any(d < 0 or d > 6 for d in days):
            raise ValueError(f"peak_days are weekdays 0 (Monday) to 6 (Sunday), got {days}")
        return tuple(sorted(set(days)))

    @model_validator(mode="after")
    def _ordered(self) -> TimeFactors:
        if _minutes(self.peak_start) >= _minutes(self.peak_end):
            raise ValueError(
                f"peak_start ({self.peak_start}) must be before peak_end ({self.peak_end})"
            )
        return self

    @property
    def zone(self) -> dt.timezone:
        return dt.timezone(dt.timedelta(hours=self.utc_offset_hours))

    def is_peak(self, when: dt.datetime) -> bool:
        local = when.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        in_hours = _minutes(self.peak_start) <= minute < _minutes(self.peak_end)
        return local.weekday() in self.peak_days and in_hours

    def factor_at(self, when: dt.datetime) -> float:
        return self.peak_factor if self.is_peak(when) else self.off_peak_factor

    def factor_between(self, start: dt.datetime, end: dt.datetime) -> float:
        """The highest factor charged to a request arriving anywhere in [start, end]:
        a span that holds a boundary may meet either phase."""
        if end <= start or self.next_boundary(start) > end:
            return self.factor_at(start)
        return max(self.peak_factor, self.off_peak_factor)

    def next_boundary(self, when: dt.datetime) -> dt.datetime:
        """The first instant after `when` at which the phase changes (a week at most)."""
        local = when.astimezone(self.zone)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        start, end = _minutes(self.peak_start), _minutes(self.peak_end)
        for days in range(9):
            day = midnight + days * _DAY
            if day.weekday() not in self.peak_days:
                continue
            for minute in (start, end):
                edge = day + dt.timedelta(minutes=minute)
                if edge > local:
                    return edge.astimezone(dt.UTC)
        raise ValueError("a plan with no peak day has no boundary")  # pragma: no cover

    def off_peak_start(self, when: dt.datetime) -> dt.datetime:
        """`when` itself off-peak; in peak, the end of the current peak period."""
        if not self.peak_days or not self.is_peak(when):
            return when
        return self.next_boundary(when)


class OffPeakPolicy(_Frozen):
    """Which reviews wait for off-peak prices on an account with time factors.

    `defer = "large"` parks, during peak, the messages of PRs planned into at least
    `min_messages` messages, until the next off-peak start; a PR that has waited
    `max_defer` since it arrived runs at once, and so does one a person asked for
    (`reviewq enqueue --now`, or the label `[webhook] now_label` on the PR). Smaller
    PRs are never deferred: their reviewers are waiting, and they cost little."""

    defer: Literal["large", "off"] = "large"
    min_messages: int = Field(default=20, ge=1, le=100_000)
    max_defer_ms: int = Field(default=6 * 3_600_000, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _friendly(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_defer" in data:
            data = dict(data)
            if "max_defer_ms" in data:
                raise ValueError("give 'max_defer' or 'max_defer_ms', not both")
            try:
                data["max_defer_ms"] = parse_duration_ms(data.pop("max_defer"))
            except ValueError as exc:
                raise ValueError(f"'max_defer': {exc}") from None
        return data


@dataclass(frozen=True, slots=True)
class Calendar:
    """Maps the limiter's clock (epoch ms) onto the instant time factors are read at:
    `calendar = calendar_ms + (real - real_ms) * scale`. The identity in a deployment;
    a simulation at `time_scale` x300 runs its calendar 300 times faster."""

    real_ms: int = 0
    calendar_ms: int = 0
    scale: float = 1.0

    def at(self, real_ms: int) -> dt.datetime:
        ms = self.calendar_ms + (real_ms - self.real_ms) * self.scale
        return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)

    def real_ms_at(self, when: dt.datetime) -> int:
        """The limiter's clock when the calendar reads `when`, rounded up: a wake-up
        set to it never lands before the instant it waits for."""
        ms = when.timestamp() * 1000
        return self.real_ms + math.ceil((ms - self.calendar_ms) / self.scale - 1e-6)

    def span(self, real_ms: int) -> dt.timedelta:
        """A span of the limiter's clock as calendar time (the arrival margin, say)."""
        return dt.timedelta(milliseconds=real_ms * self.scale)

    def to_json(self) -> str:
        return json.dumps([self.real_ms, self.calendar_ms, self.scale])

    @classmethod
    def from_json(cls, raw: bytes | str) -> Calendar:
        real, cal, scale = json.loads(raw)
        return cls(int(real), int(cal), float(scale))


IDENTITY = Calendar()


class RedisCalendar:
    """A calendar published in Redis at `key` by whoever drives simulated time; the
    identity while the key is absent. Read once: a published mapping never changes."""

    def __init__(self, redis: redis_lib.Redis, key: str) -> None:
        self.redis, self.key = redis, key
        self._found: Calendar | None = None

    def current(self) -> Calendar:
        if self._found is None:
            raw = self.redis.get(self.key)
            if raw is None:
                return IDENTITY
            self._found = Calendar.from_json(cast(bytes, raw))
        return self._found

    def publish(self, calendar: Calendar, ttl_s: int) -> None:
        self.redis.set(self.key, calendar.to_json(), ex=max(1, ttl_s))
        self._found = calendar
