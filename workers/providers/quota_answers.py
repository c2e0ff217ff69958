"""Reading the providers' quota answers: Synthetic's header and `/v2/quotas`, Z.AI's
quota endpoint. Shapes drift, so every field is optional and anything unrecognised is
skipped, never raised; an answer with nothing in it is "no reading".
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from workers.providers.resets import as_json, parse_epoch, parse_iso8601

__all__ = [
    "Metering",
    "QuotaReading",
    "ReadingUnit",
    "is_empty_answer",
    "parse_synthetic",
    "parse_zai",
    "zai_key_kind",
]

_MONEY_TEXT = re.compile(r"^\s*\$?\s*(-?[\d,]*\.?\d+)\s*$")
# Z.AI's TIME_LIMIT is the monthly MCP tool allowance; it never gates completions.
_ZAI_TYPES = frozenset({"TOKENS_LIMIT", "CREDIT_LIMIT"})

ReadingUnit = Literal["requests", "usd", "credits", "percent"]
Metering = Literal["credits", "prompts"]


@dataclass(frozen=True, slots=True)
class QuotaReading:
    """One provider window as the provider reports it, in milli-units of `unit`.

    `window` is the provider's name for it (`rollingFiveHourLimit`, `weeklyTokenLimit`,
    `subscription`, Z.AI's `unit:3`/`unit:6` percentages, or `credits:3`/`credits:6`
    for a V3 key's credit counts); a window map turns it into a plan window. `percent`
    readings carry only a fraction (limit 100 000 = 100 %).
    """

    window: str
    used_milli: int
    limit_milli: int
    reset_at_ms: int | None
    unit: ReadingUnit = "requests"


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        match = _MONEY_TEXT.match(value)
        value = float(match[1].replace(",", "")) if match else None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _milli(value: float) -> int:
    return max(0, math.ceil(value * 1000 - 1e-6))


def _reading(
    window: str, used: float, limit: float, reset: int | None, unit: ReadingUnit
) -> QuotaReading | None:
    if limit <= 0:
        return None
    used = min(max(used, 0.0), limit)
    return QuotaReading(window, _milli(used), _milli(limit), reset, unit)


def _synthetic_rolling(data: Mapping[str, object]) -> QuotaReading | None:
    block = data.get("rollingFiveHourLimit")
    if isinstance(block, Mapping):
        top, left = _number(block.get("max")), _number(block.get("remaining"))
        if top is None:
            return None
        used = top if block.get("limited") is True or left is None else top - left
        reset = parse_iso8601(block.get("nextTickAt"))
        return _reading("rollingFiveHourLimit", used, top, reset, "requests")
    legacy = data.get("subscription")
    if isinstance(legacy, Mapping):
        top, used_n = _number(legacy.get("limit")), _number(legacy.get("requests"))
        if top is None or used_n is None:
            return None
        reset = parse_iso8601(legacy.get("renewsAt"))
        return _reading("subscription", used_n, top, reset, "requests")
    return None


def _synthetic_credits(data: Mapping[str, object]) -> QuotaReading | None:
    block = data.get("weeklyTokenLimit")
    if not isinstance(block, Mapping):
        return None
    reset = parse_iso8601(block.get("nextRegenAt"))
    top, left = _number(block.get("maxCredits")), _number(block.get("remainingCredits"))
    if top is not None and left is not None:
        return _reading("weeklyTokenLimit", top - left, top, reset, "usd")
    pct_left = _number(block.get("percentRemaining"))
    if pct_left is None:
        return None
    return _reading("weeklyTokenLimit", 100 - pct_left, 100, reset, "percent")


def parse_synthetic(data: object) -> list[QuotaReading]:
    """`/v2/quotas` or the `x-synthetic-quotas` header (already JSON-decoded or text).

    The legacy `subscription` block counts only when the newer one is absent, as in
    `synthetic_reset`: both describe the same request quota.
    """
    data = as_json(data)
    if not isinstance(data, Mapping):
        return []
    found = (_synthetic_rolling(data), _synthetic_credits(data))
    return [r for r in found if r is not None]


def _zai_entry(entry: Mapping[str, object]) -> QuotaReading | None:
    unit = entry.get("unit")
    kind = entry.get("type")
    if kind not in _ZAI_TYPES or isinstance(unit, bool) or not isinstance(unit, int):
        return None
    reset = parse_epoch(entry.get("nextResetTime"))
    top, cur = _number(entry.get("usage")), _number(entry.get("currentValue"))
    if kind == "CREDIT_LIMIT" and top and cur is not None:
        # V3: counts in credits; `percentage` is rounded down (1438/12000 reads 11).
        return _reading(f"credits:{unit}", cur, top, reset, "credits")
    pct = _number(entry.get("percentage"))
    if pct is None:  # older shape: counts instead of a percentage
        if not top or cur is None:
            return None
        pct = 100 * cur / top
    return _reading(f"unit:{unit}", pct, 100, reset, "percent")


def _zai_limits(data: object) -> list[Mapping[str, object]]:
    data = as_json(data)
    inner = data.get("data") if isinstance(data, Mapping) else None
    limits = inner.get("limits") if isinstance(inner, Mapping) else None
    return [e for e in limits if isinstance(e, Mapping)] if isinstance(limits, list) else []


def parse_zai(data: object) -> list[QuotaReading]:
    """`GET /api/monitor/usage/quota/limit`: `data.limits[]` with `unit` 3 = hours,
    5 = month, 6 = week. A V3 key's `CREDIT_LIMIT` entries carry `currentValue` (used)
    and `usage` (the allowance) in credits, read exactly; other entries a used
    `percentage` (the counts were removed from `TOKENS_LIMIT` in 2026)."""
    found = (_zai_entry(e) for e in _zai_limits(data))
    return [r for r in found if r is not None]


def zai_key_kind(data: object) -> tuple[Metering | None, str | None]:
    """What a Z.AI key is, from its quota answer: `credits` (V3: `CREDIT_LIMIT`
    entries) or `prompts` (V2: `TOKENS_LIMIT`), and its tier (`data.level`)."""
    types = {e.get("type") for e in _zai_limits(data)}
    kind: Metering | None = None
    if "CREDIT_LIMIT" in types:
        kind = "credits"
    elif "TOKENS_LIMIT" in types:
        kind = "prompts"
    data = as_json(data)
    inner = data.get("data") if isinstance(data, Mapping) else None
    level = inner.get("level") if isinstance(inner, Mapping) else None
    return kind, level.lower() if isinstance(level, str) and level.isalnum() else None


def is_empty_answer(data: object) -> bool:
    """An answer that carries no reading at all (Synthetic's `{}` to an API key since
    about 2026-09-14): "no reading", never "nothing used"."""
    data = as_json(data)
    return data is None or (isinstance(data, Mapping | list) and not data)
