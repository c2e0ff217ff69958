"""The units every plan number is written in: durations and milli-units.

Apart from `plans` so the modules a plan is built from (`timeofday`, `pricing`) can
read durations without importing the plan itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["MILLI", "parse_duration_ms", "resolve_aliases", "to_milli"]

MILLI = 1000
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration_ms(value: Any) -> int:
    """Accept `90`, `"90s"`, `"5h"`, `"7d"`: config files read better with units.

    A bare number means seconds, as in the scenario files of `reviewq simulate`.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 90, '90s', '5h' or '7d'")
    if isinstance(value, int | float):
        ms = float(value) * 1000
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        ms = float(m.group(1)) * _UNIT_MS[m.group(2) or "s"]
    else:
        raise ValueError(f"expected a duration such as 90, '90s', '5h' or '7d', got {value!r}")
    if ms <= 0 or not math.isfinite(ms):
        raise ValueError(f"a duration must be positive, got {value!r}")
    return round(ms)


def to_milli(units: float) -> int:
    """Requests (or dollars) to integer milli-units, the limiter's only currency."""
    if units < 0 or not math.isfinite(units):
        raise ValueError(f"expected a non-negative amount, got {units!r}")
    return round(units * MILLI)


def resolve_aliases(
    data: dict[str, Any], aliases: Iterable[tuple[str, str, Callable[[Any], Any]]]
) -> dict[str, Any]:
    """A copy of `data` where each friendly key (`src`, e.g. "duration": "5h") is
    converted into its field (`dst`, "duration_ms"). For a before-validator: its errors
    carry no field location, so each message names its key, and only ValueError
    becomes a validation error (a TypeError would crash)."""
    data = dict(data)
    for src, dst, convert in aliases:
        if src not in data:
            continue
        if dst in data:
            raise ValueError(f"give {src!r} or {dst!r}, not both")
        try:
            data[dst] = convert(data.pop(src))
        except ValueError as exc:
            raise ValueError(f"{src!r}: {exc}") from None
    return data
