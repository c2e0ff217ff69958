"""The provider's own quota numbers, fed into the limiter so it never stays optimistic.

The limiter cannot see spending it did not grant (a coding tool on the same key) nor
the provider's token weighting. Synthetic attaches `x-synthetic-quotas` to every
completion response, 429s included, and both providers have a quota endpoint that
costs nothing. Each reading goes through `Limiter.sync`, which only ever moves the
local view toward the more pessimistic number, so a stale or odd reading can never
hand out budget the limiter would not have.

The endpoints' shapes drift (`quota_answers` reads them); an answer with nothing in it
(Synthetic's `{}` to an API key since about 2026-09-14) is "no reading" and changes
nothing. Every reading applied, and every empty answer, is recorded with its source
and time (`scheduler.quota.readings`) for `inspect`; a Z.AI answer also says whether
the key is a V2 (prompts) or V3 (credits) key, which is checked against the plan.

Polling: after a quota refusal, and on a credit plan also every `interval_ms` while
busy (after the calls that finish then), once per account for all workers together
(they share the interval through Redis). Z.AI sends no quota header, so on its credit
plans the endpoint is the only way to see spending reviewq did not grant before it
turns into a 1308: they are polled every minute (`CREDIT_POLL_INTERVAL_MS`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from scheduler.quota.limiter import LIMITER_PREFIX, Limiter
from scheduler.quota.plans import Plan, Window
from scheduler.quota.readings import Detection, ProviderReadings, WindowReading
from workers.providers.client import ProviderClient, ProviderResult
from workers.providers.quota_answers import (
    QuotaReading,
    is_empty_answer,
    parse_synthetic,
    parse_zai,
    zai_key_kind,
)

__all__ = [
    "CREDIT_POLL_INTERVAL_MS",
    "DEFAULT_POLL_INTERVAL_MS",
    "QuotaPoller",
    "QuotaReading",
    "Synced",
    "apply_readings",
    "default_poll_interval_ms",
    "default_window_map",
    "parse_synthetic",
    "parse_zai",
    "quota_endpoint",
]

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL_MS = 180_000
# A person's coding tool on a shared Lite key can burn about a credit a second at
# peak (calls of ~20k input tokens every ~10 s at GLM-5.1's 6.9/10k: reviewq estimate,
# 2026-12); a minute of that unseen is ~60 credits, 3 % of Lite's 5-hour window, which
# a headroom of 5 % covers. The endpoint costs no quota; one GET a minute per account.
CREDIT_POLL_INTERVAL_MS = 60_000
_HOUR_MS, _WEEK_MS = 3_600_000, 7 * 86_400_000
_MONEY = frozenset({"usd", "credits"})
_SYN_HEADER = "x-synthetic-quotas"
_HEADER_SOURCE = "x-synthetic-quotas header"

_Parser = Callable[[object], "list[QuotaReading]"]


@dataclass(frozen=True, slots=True)
class Synced:
    """A reading applied to a plan window; `moved` is whether the limiter adopted it."""

    reading: QuotaReading
    plan_window: str
    used_milli: int
    moved: bool


def default_poll_interval_ms(plan: Plan) -> int:
    return CREDIT_POLL_INTERVAL_MS if plan.credit_windows else DEFAULT_POLL_INTERVAL_MS


def default_window_map(plan: Plan) -> dict[str, str]:
    """Provider window -> plan window, by duration and unit rather than by name, so a
    renamed or user-defined window still receives its provider's numbers. A reading
    whose kind the plan lacks (a V3 key's credits on a V2 prompt plan, say) still
    feeds the window of the same length, as the fraction of it that is used."""
    five_h = _pick(plan, _HOUR_MS * 5, money=False) or _pick(plan, _HOUR_MS * 5)
    weekly = _pick(plan, _WEEK_MS, money=False) or _pick(plan, _WEEK_MS)
    credits = next((w for w in plan.windows if w.unit in _MONEY), None)
    credits_5h = _pick(plan, _HOUR_MS * 5, unit="credits") or five_h
    credits_week = _pick(plan, _WEEK_MS, unit="credits") or weekly
    pairs = {
        "rollingFiveHourLimit": five_h,
        "subscription": five_h,
        "weeklyTokenLimit": credits,
        "unit:3": five_h,
        "unit:6": weekly,
        "credits:3": credits_5h,
        "credits:6": credits_week,
    }
    return {src: w.name for src, w in pairs.items() if w is not None}


def _pick(
    plan: Plan, duration_ms: int, *, money: bool | None = None, unit: str | None = None
) -> Window | None:
    for w in plan.windows:
        if w.duration_ms != duration_ms or (unit is not None and w.unit != unit):
            continue
        if money is None or (w.unit in _MONEY) == money:
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


def _noted(synced: list[Synced], source: str, now_ms: int) -> list[WindowReading]:
    return [
        WindowReading(
            s.plan_window,
            source,
            now_ms,
            s.reading.used_milli,
            s.reading.limit_milli,
            s.reading.reset_at_ms,
            s.moved,
        )
        for s in synced
    ]


def _configured(plan: Plan) -> str:
    return "credits" if plan.credit_windows else "prompts"


def _suggest(kind: str, level: str | None, plan: Plan) -> str:
    tier = level or next((t for t in ("lite", "pro", "max") if t in plan.name), "pro")
    return f"zai-{tier}-v3" if kind == "credits" else f"zai-{tier}"


class QuotaPoller:
    """Keeps one account's limiter in step with the provider's numbers.

    The worker calls `maybe_poll(now_ms)` after each call on a credit plan
    (`polls_while_busy`) and after a quota refusal; it polls at worker start, after any
    429 (`observe` notes it), and every `interval_ms` while busy, one worker per
    interval for the whole deployment (`ProviderReadings.claim_poll`). No thread:
    a poll is one quick GET, and a worker that does nothing needs no fresh numbers.

    `window_map` entries override `default_window_map`; map a provider window to ""
    to ignore it.
    """

    def __init__(
        self,
        client: ProviderClient,
        limiter: Limiter,
        *,
        interval_ms: int | None = None,
        window_map: Mapping[str, str] | None = None,
        readings: ProviderReadings | None = None,
    ) -> None:
        interval_ms = interval_ms or default_poll_interval_ms(limiter.plan)
        if interval_ms <= 0:
            raise ValueError(f"interval_ms must be positive, got {interval_ms}")
        self.client = client
        self.limiter = limiter
        self.interval_ms = interval_ms
        self.window_map = {**default_window_map(limiter.plan), **(window_map or {})}
        self.readings = readings or ProviderReadings(
            limiter.redis, limiter.account, key_prefix=LIMITER_PREFIX
        )
        self.last_poll_ms: int | None = None
        self.poll_requested = False
        self._warned: Detection | None = None

    @property
    def provider(self) -> str:
        return self.client.account.provider

    @property
    def polls_while_busy(self) -> bool:
        """A credit plan's cost is known only from the provider's count, and Z.AI sends
        it in no header: such a plan is polled after every call, once per interval.
        Request plans are polled at the first call and after a 429, as before."""
        return bool(self.limiter.plan.credit_windows)

    def due(self, now_ms: int, *, busy: bool = True) -> bool:
        if self.last_poll_ms is None or self.poll_requested:
            return True
        return busy and now_ms - self.last_poll_ms >= self.interval_ms

    def maybe_poll(self, now_ms: int, *, busy: bool = True) -> list[Synced] | None:
        """Poll if due and no other worker polled within the interval; None when not."""
        if not self.due(now_ms, busy=busy):
            return None
        if not self.poll_requested and not self.readings.claim_poll(now_ms, self.interval_ms):
            self.last_poll_ms = now_ms  # another worker has just polled
            return None
        return self.poll(now_ms)

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
        source = f"GET {urlsplit(url).path}"
        if self.provider == "zai":
            self._detect(fetched.data, now_ms)
        found = parse(fetched.data)
        synced = apply_readings(self.limiter, found, now_ms, self.window_map)
        empty = [source] if not found and is_empty_answer(fetched.data) else []
        if empty:
            log.info("quota poll account=%s: %s answered with no reading", self.name, source)
        self.readings.note(_noted(synced, source, now_ms), empty, now_ms)
        return synced

    @property
    def name(self) -> str:
        return self.client.account.name

    def observe(self, result: ProviderResult, now_ms: int) -> list[Synced]:
        """Use what a completion response says about the quota; any 429 asks for a poll."""
        if result.status == 429:
            self.request_poll()
        header = result.headers.get(_SYN_HEADER)
        if header is None:
            return []
        found = parse_synthetic(header)
        synced = apply_readings(self.limiter, found, now_ms, self.window_map)
        empty = [_HEADER_SOURCE] if not found and is_empty_answer(header) else []
        self.readings.note(_noted(synced, _HEADER_SOURCE, now_ms), empty, now_ms)
        return synced

    def _detect(self, data: object, now_ms: int) -> None:
        """A V2 (prompts) or V3 (credits) key against the plan the config names: said
        in the worker log (once per change), and kept for `inspect` and `/metrics`."""
        kind, level = zai_key_kind(data)
        if kind is None:
            return
        plan = self.limiter.plan
        configured = _configured(plan)
        suggested = _suggest(kind, level, plan) if kind != configured else None
        found = Detection(kind, configured, level, suggested, now_ms)
        self.readings.note_detection(found)
        if found.mismatch and (self._warned is None or self._warned.suggested != suggested):
            log.warning(
                "account %s: its key is a Z.AI %s key (quota endpoint: %s), but plan %r "
                "counts %s; use plan = %r",
                self.name,
                "V3 credit" if kind == "credits" else "V2 prompt",
                "CREDIT_LIMIT" if kind == "credits" else "TOKENS_LIMIT",
                plan.name,
                configured,
                suggested,
            )
        self._warned = found if found.mismatch else None

    def _endpoint(self) -> tuple[str, Literal["bearer", "raw"], _Parser] | None:
        return quota_endpoint(self.provider, self.client.origin)


def quota_endpoint(
    provider: str, origin: str
) -> tuple[str, Literal["bearer", "raw"], _Parser] | None:
    """The provider's free quota view beside its API (`reviewq accounts test` probes it
    too): its URL, how it wants the key, and the parser of its answer."""
    if provider == "synthetic":
        return f"{origin}/v2/quotas", "bearer", parse_synthetic
    if provider == "zai":
        return f"{origin}/api/monitor/usage/quota/limit", "raw", parse_zai
    return None
