"""When does budget come back? Every source a provider uses, as one epoch-ms answer.

Providers disagree on how they say it: Z.AI writes a Beijing wall-clock time into the
error message, Synthetic puts ISO-8601 times into a JSON header, OpenAI sends Go-style
durations, Anthropic RFC 3339 times, and the Z.AI quota endpoint epoch milliseconds.
The scheduler only wants one absolute time it can park a job or block an account
until, so every parser here returns epoch ms (or None when it cannot be sure).

`now_ms` is always passed in: the scheduler takes its clock from Redis `TIME`, and the
tests need to be deterministic, so no function here reads the local clock.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import math
import re
from collections.abc import Iterator, Mapping

__all__ = [
    "BEIJING",
    "DEFAULT_MARGIN_MS",
    "DEFAULT_MAX_HORIZON_MS",
    "as_json",
    "parse_epoch",
    "parse_go_duration_ms",
    "parse_iso8601",
    "parse_retry_after",
    "parse_retry_after_ms",
    "parse_zai_message",
    "reset_from_response",
    "synthetic_limited",
    "synthetic_reset",
    "zai_quota_reset",
]

# Z.AI's reset times carry no offset and are Beijing time: reading them as UTC or as
# the host's local time is off by up to 8 hours.
BEIJING = dt.timezone(dt.timedelta(hours=8), "UTC+8")
# Clocks skew and resets land a little late; waking a moment after the reset is cheap,
# waking a moment before it costs a wasted request and maybe a fair-use mark.
DEFAULT_MARGIN_MS = 2_000
# Nothing a provider resets is further away than a monthly window; anything beyond
# this is a typo or a parse slip and must not park an account for a year.
DEFAULT_MAX_HORIZON_MS = 40 * 86_400_000

_ZAI_RESET = re.compile(
    r"(?:resets?\s+at|将在)\s*(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})", re.IGNORECASE
)
_GO_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:h|ms|us|µs|ns|m|s))+")
_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)")
_GO_UNIT_MS = {"h": 3.6e6, "m": 6e4, "s": 1e3, "ms": 1.0, "us": 1e-3, "µs": 1e-3, "ns": 1e-6}
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_ANTHROPIC_RESET = re.compile(r"anthropic-ratelimit-(.+)-reset")
# Headers that describe when a *bucket* refills. They ride on every response, so they
# only mean "wait" when the response itself says the budget is gone.
_BUCKET_STATUSES = frozenset({402, 429})
# The Z.AI quota endpoint's TIME_LIMIT entry is the monthly MCP tool-call allowance
# (web search, reader); it never gates chat completions.
_ZAI_GATING_TYPES = frozenset({"TOKENS_LIMIT", "CREDIT_LIMIT"})


def parse_zai_message(text: str) -> int | None:
    """Read "Your limit will reset at …" (or the Chinese "将在 … 重置") as Beijing time.

    The latest match wins when a message (or a wrapped Anthropic-style one) names more
    than one time: waiting for the later one is never wrong.
    """
    found: list[int] = []
    for day, clock in _ZAI_RESET.findall(text):
        try:
            naive = dt.datetime.fromisoformat(f"{day}T{clock}")
        except ValueError:
            continue
        found.append(_to_ms(naive.replace(tzinfo=BEIJING)))
    return max(found, default=None)


def parse_iso8601(value: object) -> int | None:
    """ISO-8601 / RFC 3339 with an offset (or 'Z'); a naive time is refused.

    Without an offset we would have to guess the zone, and a wrong guess is worse
    than no answer: the caller then falls back on other sources or its own backoff.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return None
    return _to_ms(parsed)


def parse_epoch(value: object) -> int | None:
    """Epoch ms, as Z.AI's `nextResetTime`; tolerates epoch seconds.

    The quota endpoint is undocumented and has drifted, so a seconds value (anything
    below 1e11, which as ms would be 1973) is taken as seconds rather than dropped.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value.strip())
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        return None
    return math.ceil(value * 1000 if value < 1e11 else value)


def parse_go_duration_ms(value: str) -> int | None:
    """OpenAI's `x-ratelimit-reset-*`: Go durations such as `6m0s`, `20ms`, `1h2m3.5s`.

    Rounded up, because waking early is the expensive mistake.
    """
    text = value.strip()
    if not _GO_DURATION.fullmatch(text):
        return None
    total = sum(float(n) * _GO_UNIT_MS[unit] for n, unit in _GO_PART.findall(text))
    return math.ceil(total)


def parse_retry_after(value: str, now_ms: int) -> int | None:
    """`Retry-After` is either delta-seconds or an HTTP-date (RFC 9110)."""
    text = value.strip()
    if _NUMBER.fullmatch(text):
        return now_ms + math.ceil(float(text) * 1000)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" parses naive; HTTP dates are always GMT
        when = when.replace(tzinfo=dt.UTC)
    return _to_ms(when)


def parse_retry_after_ms(value: str, now_ms: int) -> int | None:
    """`retry-after-ms`: the millisecond form some OpenAI-compatible servers send."""
    text = value.strip()
    return now_ms + math.ceil(float(text)) if _NUMBER.fullmatch(text) else None


def synthetic_reset(quotas: object, *, credits: bool = False) -> int | None:
    """The wait Synthetic's quota JSON implies (header `x-synthetic-quotas` or /v2/quotas).

    Requests regenerate in ticks, so the next tick (`nextTickAt`) is when a request
    becomes possible again; the legacy `subscription.renewsAt` is used only when the
    newer block is absent. With `credits`, the weekly credits' `nextRegenAt` instead.
    """
    data = as_json(quotas)
    if not isinstance(data, Mapping):
        return None
    if credits:
        return parse_iso8601(_dig(data, "weeklyTokenLimit", "nextRegenAt"))
    tick = parse_iso8601(_dig(data, "rollingFiveHourLimit", "nextTickAt"))
    return tick if tick is not None else parse_iso8601(_dig(data, "subscription", "renewsAt"))


def synthetic_limited(quotas: object) -> bool:
    """Synthetic's own verdict that the rolling request quota is used up.

    A 429 whose text changed wording still counts as quota, not as a transient blip.
    """
    rolling = _dig(as_json(quotas), "rollingFiveHourLimit")
    return isinstance(rolling, Mapping) and rolling.get("limited") is True


def zai_quota_reset(body: object) -> int | None:
    """Latest `nextResetTime` among the exhausted windows of Z.AI's quota endpoint.

    Only windows at 100 % count: a window with room left is not a reason to wait.
    """
    limits = _dig(as_json(body), "data", "limits")
    if not isinstance(limits, list):
        return None
    found: list[int] = []
    for entry in limits:
        if not isinstance(entry, Mapping) or entry.get("type") not in _ZAI_GATING_TYPES:
            continue
        pct = entry.get("percentage")
        if isinstance(pct, int | float) and not isinstance(pct, bool) and pct >= 100:
            reset = parse_epoch(entry.get("nextResetTime"))
            if reset is not None:
                found.append(reset)
    return max(found, default=None)


def reset_from_response(
    status: int | None,
    headers: Mapping[str, str],
    body: object,
    now_ms: int,
    *,
    margin_ms: int = DEFAULT_MARGIN_MS,
    max_horizon_ms: int = DEFAULT_MAX_HORIZON_MS,
) -> int | None:
    """The latest plausible reset any source in the response names, plus a margin.

    The latest wins because every source is a lower bound on the wait: retrying before
    any one of them has passed just earns another refusal. Past, malformed and absurdly
    distant values are dropped; if nothing is left the answer is None.
    `body` may be parsed JSON, text or bytes.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    candidates = [c for c in _candidates(status, lower, body, now_ms) if c is not None]
    plausible = [c for c in candidates if now_ms < c <= now_ms + max_horizon_ms]
    return max(plausible) + margin_ms if plausible else None


def _candidates(
    status: int | None, headers: Mapping[str, str], body: object, now_ms: int
) -> Iterator[int | None]:
    """Every source, most specific first; order only matters for reading, not the result."""
    data = as_json(body)
    for text in _strings(data if data is not None else body):
        yield parse_zai_message(text)
    yield zai_quota_reset(data)
    if "retry-after-ms" in headers:
        yield parse_retry_after_ms(headers["retry-after-ms"], now_ms)
    elif "retry-after" in headers:
        yield parse_retry_after(headers["retry-after"], now_ms)
    if status not in _BUCKET_STATUSES:
        return
    if "x-synthetic-quotas" in headers:
        yield synthetic_reset(headers["x-synthetic-quotas"], credits=status == 402)
    for bucket in ("requests", "tokens"):
        reset = headers.get(f"x-ratelimit-reset-{bucket}")
        if reset is not None and _exhausted(headers.get(f"x-ratelimit-remaining-{bucket}")):
            delta = parse_go_duration_ms(reset)
            yield None if delta is None else now_ms + delta
    for name, value in headers.items():
        match = _ANTHROPIC_RESET.fullmatch(name)
        if match and _exhausted(headers.get(f"anthropic-ratelimit-{match[1]}-remaining")):
            yield parse_iso8601(value) or parse_epoch(value)


def _exhausted(remaining: str | None) -> bool:
    """A bucket's reset only matters when it is empty (or we are not told it is not)."""
    if remaining is None:
        return True
    try:
        return float(remaining.strip()) <= 0
    except ValueError:
        return True


def _to_ms(when: dt.datetime) -> int:
    return math.floor(when.timestamp() * 1000)


def as_json(value: object) -> object:
    """Headers and bodies arrive as text or bytes; JSON-looking ones are decoded."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _dig(data: object, *path: str) -> object:
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _strings(data: object, depth: int = 0) -> Iterator[str]:
    """All text in a body, wherever the provider's envelope happens to put it."""
    if isinstance(data, bytes | bytearray):
        yield bytes(data).decode("utf-8", errors="replace")
    elif isinstance(data, str):
        yield data
    elif depth < 6 and isinstance(data, Mapping):
        for item in data.values():
            yield from _strings(item, depth + 1)
    elif depth < 6 and isinstance(data, list):
        for item in data:
            yield from _strings(item, depth + 1)
