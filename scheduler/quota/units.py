"""The units every plan number is written in: durations and milli-units.

Apart from `plans` so the modules a plan is built from (`timeofday`, `pricing`) can
read durations without importing the plan itself.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["MILLI", "parse_duration_ms", "to_milli"]

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
