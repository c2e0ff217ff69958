"""The provider's own quota numbers, fed into the limiter so it never stays optimistic.

The limiter cannot see spending it did not grant (a coding tool on the same key) nor
the provider's token weighting. Synthetic attaches `x-synthetic-quotas` to every
completion response, 429s included, and both providers have a quota endpoint that
costs nothing. Each reading goes through `Limiter.sync`, which only ever moves the
local view toward the more pessimistic number, so a stale or odd reading can never
hand out budget the limiter would not have.

The endpoints' shapes drift (Synthetic's legacy `subscription` versus
`rollingFiveHourLimit`/`weeklyTokenLimit`; Z.AI dropped counts and added windows), so
every field is optional and anything unrecognised is skipped, never raised.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from scheduler.quota.limiter import Limiter
from scheduler.quota.plans import Plan, Window
from workers.providers.client import ProviderClient, ProviderResult
from workers.providers.resets import as_json, parse_epoch, parse_iso8601

__all__ = [
    "DEFAULT_POLL_INTERVAL_MS",
    "QuotaPoller",
    "QuotaReading",
    "Synced",
    "apply_readings",
    "default_window_map",
    "parse_synthetic",
    "parse_zai",
]

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL_MS = 180_000
_HOUR_MS, _WEEK_MS = 3_600_000, 7 * 86_400_000
_MONEY = frozenset({"usd", "credits"})
_MONEY_TEXT = re.compile(r"^\s*\$?\s*(-?[\d,]*\.?\d+)\s*$")
# Z.AI's TIME_LIMIT is the monthly MCP tool allowance; it never gates completions.
_ZAI_TYPES = frozenset({"TOKENS_LIMIT", "CREDIT_LIMIT"})
_SYN_HEADER = "x-synthetic-quotas"

ReadingUnit = Literal["requests", "usd", "percent"]
_Parser = Callable[[object], "list[QuotaReading]"]


@dataclass(frozen=True, slots=True)
class QuotaReading:
    """One provider window as the provider reports it, in milli-units of `unit`.

    `window` is the provider's name for it (`rollingFiveHourLimit`, `weeklyTokenLimit`,
    `subscription`, or Z.AI's `unit:3`/`unit:6`); a window map turns it into a plan
    window. `percent` readings carry only a fraction (limit 100 000 = 100 %).
    """

    window: str
    used_milli: int
    limit_milli: int
    reset_at_ms: int | None
    unit: ReadingUnit = "requests"


@dataclass(frozen=True, slots=True)
class Synced:
    """A reading applied to a plan window; `moved` is whether the limiter adopted it."""

    reading: QuotaReading
    plan_window: str
    used_milli: int
    moved: bool


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
    if entry.get("type") not in _ZAI_TYPES or isinstance(unit, bool) or not isinstance(unit, int):
        return None
    pct = _number(entry.get("percentage"))
    if pct is None:  # older shape: counts instead of a percentage
        top, cur = _number(entry.get("usage")), _number(entry.get("currentValue"))
        if not top or cur is None:
            return None
        pct = 100 * cur / top
    reset = parse_epoch(entry.get("nextResetTime"))
    return _reading(f"unit:{unit}", pct, 100, reset, "percent")


def parse_zai(data: object) -> list[QuotaReading]:
    """`GET /api/monitor/usage/quota/limit`: `data.limits[]` with `unit` 3 = hours,
    5 = month, 6 = week, and a used `percentage` (the counts were removed in 2026)."""
    data = as_json(data)
    inner = data.get("data") if isinstance(data, Mapping) else None
    limits = inner.get("limits") if isinstance(inner, Mapping) else None
    if not isinstance(limits, list):
        return []
    found = (_zai_entry(e) for e in limits if isinstance(e, Mapping))
    return [r for r in found if r is not None]


def default_window_map(plan: Plan) -> dict[str, str]:
    """Provider window -> plan window, by duration and unit rather than by name, so a
    renamed or user-defined window still receives its provider's numbers."""
    five_h = _pick(plan, _HOUR_MS * 5, money=False) or _pick(plan, _HOUR_MS * 5)
    weekly = _pick(plan, _WEEK_MS, money=False) or _pick(plan, _WEEK_MS)
    credits = next((w for w in plan.windows if w.unit in _MONEY), None)
    pairs = {
        "rollingFiveHourLimit": five_h,
        "subscription": five_h,
        "weeklyTokenLimit": credits,
        "unit:3": five_h,
        "unit:6": weekly,
    }
    return {src: w.name for src, w in pairs.items() if w is not None}


def _pick(plan: Plan, duration_ms: int, *, money: bool | None = None) -> Window | None:
    for w in plan.windows:
        if w.duration_ms == duration_ms and (money is None or (w.unit in _MONEY) == money):
            return w
    return None


def _local_used(reading: QuotaReading, window: Window) -> int:
    """The reading in the plan window's milli-units: the provider's fraction of our
    limit, or its absolute count when the units agree, whichever is more pessimistic
    (the plan's limit may be set below the provider's to leave room for people)."""
    limit = window.limit_milli
    scaled = math.ceil(limit * reading.used_milli / reading.limit_milli)
    same_unit = reading.unit == window.unit or (reading.unit == "usd" and window.unit in _MONEY)
    used = max(scaled, reading.used_milli) if same_unit else scaled
    return min(max(used, 0), limit)


def apply_readings(
    limiter: Limiter,
    readings: list[QuotaReading],
    now_ms: int,
    window_map: Mapping[str, str] | None = None,
) -> list[Synced]:
    """Sync every reading that maps to a plan window and has a reset in the future.

    A reset in the past would make the provider's count last no time at all, and no
    reset means we cannot say how long it lasts: both are skipped.
    """
    mapping = default_window_map(limiter.plan) if window_map is None else window_map
    windows = {w.name: w for w in limiter.plan.windows}
    out = []
    for reading in readings:
        window = windows.get(mapping.get(reading.window, ""))
        if window is None or reading.reset_at_ms is None or reading.reset_at_ms <= now_ms:
            continue
        used = _local_used(reading, window)
        moved = limiter.sync(window.name, used, reading.reset_at_ms)
        out.append(Synced(reading, window.name, used, moved))
    if out:
        log.debug("quota sync account=%s %s", limiter.account, _describe(out))
    return out


def _describe(synced: list[Synced]) -> str:
    return " ".join(f"{s.plan_window}={s.used_milli}{'*' if s.moved else ''}" for s in synced)


class QuotaPoller:
    """Keeps one account's limiter in step with the provider's numbers.

    The worker loop calls `maybe_poll(now_ms)`; it polls at worker start, after any
    429 (`observe` notes it), and every `interval_ms` while busy. No thread: a poll is
    one quick GET, and a worker that does nothing needs no fresh numbers.

    `window_map` entries override `default_window_map`; map a provider window to ""
    to ignore it.
    """

    def __init__(
        self,
        client: ProviderClient,
        limiter: Limiter,
        *,
        interval_ms: int = DEFAULT_POLL_INTERVAL_MS,
        window_map: Mapping[str, str] | None = None,
    ) -> None:
        if interval_ms <= 0:
            raise ValueError(f"interval_ms must be positive, got {interval_ms}")
        self.client = client
        self.limiter = limiter
        self.interval_ms = interval_ms
        self.window_map = {**default_window_map(limiter.plan), **(window_map or {})}
        self.last_poll_ms: int | None = None
        self.poll_requested = False

    @property
    def provider(self) -> str:
        return self.client.account.provider

    def due(self, now_ms: int, *, busy: bool = True) -> bool:
        if self.last_poll_ms is None or self.poll_requested:
            return True
        return busy and now_ms - self.last_poll_ms >= self.interval_ms

    def maybe_poll(self, now_ms: int, *, busy: bool = True) -> list[Synced] | None:
        """Poll if due; None when it was not."""
        return self.poll(now_ms) if self.due(now_ms, busy=busy) else None

    def request_poll(self) -> None:
        self.poll_requested = True

    def poll(self, now_ms: int) -> list[Synced]:
        """One GET of the provider's quota endpoint. A failure is logged and counts as
        a poll, so a broken endpoint is not hammered on every loop."""
        self.last_poll_ms, self.poll_requested = now_ms, False
        endpoint = self._endpoint()
        if endpoint is None or not self.limiter.plan.windows:
            return []
        url, auth, parse = endpoint
        fetched = self.client.get_json(url, auth=auth)
        if fetched.error is not None:
            log.warning("quota poll failed account=%s: %s", self.client.account.name, fetched.error)
            return []
        return apply_readings(self.limiter, parse(fetched.data), now_ms, self.window_map)

    def observe(self, result: ProviderResult, now_ms: int) -> list[Synced]:
        """Use what a completion response says about the quota; any 429 asks for a poll."""
        if result.status == 429:
            self.request_poll()
        header = result.headers.get(_SYN_HEADER)
        if header is None:
            return []
        return apply_readings(self.limiter, parse_synthetic(header), now_ms, self.window_map)

    def _endpoint(self) -> tuple[str, Literal["bearer", "raw"], _Parser] | None:
        origin = self.client.origin
        if self.provider == "synthetic":
            return f"{origin}/v2/quotas", "bearer", parse_synthetic
        if self.provider == "zai":
            return f"{origin}/api/monitor/usage/quota/limit", "raw", parse_zai
        return None
