"""The quota views a provider publishes, in each provider's own shape.

Synthetic: `x-synthetic-quotas` on every completion (and `GET /v2/quotas`); Z.AI: the
undocumented `GET /api/monitor/usage/quota/limit`; OpenAI: `x-ratelimit-*` headers.
Amounts are the provider's units (requests, dollars), not milli-units, and instants
are wall-clock times at which the simulated state changes (see `clock`).
"""

from __future__ import annotations

import json
import math
from typing import Any

from scheduler.sandbox.provider.clock import SimClock, epoch_ms, go_duration, iso_utc
from scheduler.sandbox.provider.windows import Bucket, SimWindow

__all__ = ["openai_headers", "synthetic_header", "synthetic_quotas", "zai_quota_limits"]

_WEEK_S = 7 * 86_400
_MONTH_S = 28 * 86_400
# Z.AI's `unit` field: 3 = hours, 5 = months, 6 = weeks.
_ZAI_HOURS, _ZAI_MONTHS, _ZAI_WEEKS = 3, 5, 6


def _units(milli: int) -> int | float:
    """Milli-units as the provider prints them: 500, not 500.0; 0.1 stays 0.1."""
    return milli // 1000 if milli % 1000 == 0 else round(milli / 1000, 3)


def _dollars(milli: int) -> str:
    return f"${max(milli, 0) / 1000:.2f}"


def _requests_window(windows: list[SimWindow]) -> SimWindow | None:
    return next((w for w in windows if w.unit == "requests"), None)


def _credits_window(windows: list[SimWindow]) -> SimWindow | None:
    return next((w for w in windows if w.unit in ("usd", "credits")), None)


def _rolling_block(window: SimWindow, now: float, clock: SimClock, one: int) -> dict[str, Any]:
    """`rollingFiveHourLimit`: `limited` once a default-weight request no longer fits."""
    used = window.used(now)
    remaining = window.limit - used
    limited = remaining < one
    release = window.next_release(now)
    if limited:
        tick = window.free_at(now, one)
        tick = window.empty_at(now) if tick is None else tick
    else:
        tick = now + (window.tick if isinstance(window, Bucket) else window.duration)
        tick = release[0] if release else tick
    if isinstance(window, Bucket):
        percent = window.regen * 100 / window.limit
    else:
        percent = (release[1] if release else 0) * 100 / window.limit
    return {
        "remaining": _units(max(remaining, 0)),
        "max": _units(window.limit),
        "limited": limited,
        "nextTickAt": iso_utc(clock.wall_at(tick)),
        "tickPercent": round(percent, 2),
    }


def _weekly_block(window: SimWindow, now: float, clock: SimClock) -> dict[str, Any]:
    remaining = max(window.limit - window.used(now), 0)
    release = window.next_release(now)
    when, amount = release if release else (now, 0)
    return {
        "percentRemaining": round(remaining * 100 / window.limit, 2),
        "maxCredits": _dollars(window.limit),
        "remainingCredits": _dollars(remaining),
        "nextRegenAt": iso_utc(clock.wall_at(when)),
        "nextRegenCredits": _dollars(amount),
    }


def synthetic_quotas(
    windows: list[SimWindow], now: float, clock: SimClock, one: int
) -> dict[str, Any]:
    """`/v2/quotas` JSON; `one` is a default-weight request's cost in milli-units."""
    data: dict[str, Any] = {}
    requests = _requests_window(windows)
    if requests is not None:
        data["subscription"] = {
            "limit": _units(requests.limit),
            "requests": _units(requests.used(now)),
            "renewsAt": iso_utc(clock.wall_at(requests.empty_at(now))),
        }
        data["rollingFiveHourLimit"] = _rolling_block(requests, now, clock, one)
    credits = _credits_window(windows)
    if credits is not None:
        data["weeklyTokenLimit"] = _weekly_block(credits, now, clock)
    return data


def synthetic_header(
    windows: list[SimWindow], now: float, clock: SimClock, one: int
) -> dict[str, str]:
    return {"x-synthetic-quotas": json.dumps(synthetic_quotas(windows, now, clock, one))}


def _zai_unit(seconds: float) -> tuple[int, int | float]:
    if seconds >= _MONTH_S and seconds % _MONTH_S == 0 and seconds % _WEEK_S != 0:
        return _ZAI_MONTHS, int(seconds // _MONTH_S)
    if seconds >= _WEEK_S and seconds % _WEEK_S == 0:
        return _ZAI_WEEKS, int(seconds // _WEEK_S)
    hours = seconds / 3600
    return _ZAI_HOURS, int(hours) if hours.is_integer() else round(hours, 4)


def zai_quota_limits(
    windows: list[SimWindow],
    now: float,
    clock: SimClock,
    one: int,
    *,
    level: str | None = None,
) -> dict[str, Any]:
    """`data.limits[]`: `percentage` never claims 100 before the window is really full.

    `nextResetTime` is when a default-weight request fits again if the window is used
    up, else when budget next comes back (a fresh window's end when nothing is spent).
    A credit window (a V3 key) is a `CREDIT_LIMIT` entry with its counts in credits
    (`usage` the allowance, `currentValue` used, `remaining`), and the answer names the
    key's tier in `data.level`; a V2 key's windows are `TOKENS_LIMIT` percentages.
    """
    limits = []
    for window in windows:
        used = window.used(now)
        if used + one > window.limit:
            when = window.free_at(now, one)
            when = window.empty_at(now) if when is None else when
        else:
            release = window.next_release(now)
            when = release[0] if release else now + window.duration
        unit, number = _zai_unit(window.duration)
        credits = window.unit == "credits"
        kind = "CREDIT_LIMIT" if credits else "TOKENS_LIMIT"
        entry: dict[str, Any] = {"type": kind, "unit": unit, "number": number}
        if credits:
            entry["usage"] = _units(window.limit)
            entry["currentValue"] = _units(used)
            entry["remaining"] = _units(max(window.limit - used, 0))
        entry["percentage"] = min(100, math.floor(used * 100 / window.limit))
        entry["nextResetTime"] = epoch_ms(clock.wall_at(when))
        limits.append(entry)
    data: dict[str, Any] = {"limits": limits}
    if level is not None:
        data["level"] = level
    return {"data": data, "success": True}


def openai_headers(
    windows: list[SimWindow], now: float, clock: SimClock, one: int, *, free_at: float | None
) -> dict[str, str]:
    """`x-ratelimit-*-requests`; on a 429, `free_at` is when this request would fit."""
    window = _requests_window(windows) or (windows[0] if windows else None)
    if window is None:
        return {}
    remaining = max(window.limit - window.used(now), 0) // max(one, 1)
    if free_at is not None:
        remaining, wait = 0, free_at - now
    else:
        release = window.next_release(now)
        wait = release[0] - now if release else 0.0
    real = clock.real_seconds(max(wait, 0.0))
    headers = {
        "x-ratelimit-limit-requests": str(window.limit // max(one, 1)),
        "x-ratelimit-remaining-requests": str(remaining),
        "x-ratelimit-reset-requests": go_duration(real),
    }
    if free_at is not None:
        headers["retry-after"] = str(max(1, math.ceil(real)))
    return headers
