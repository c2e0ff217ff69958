"""Sort every provider response into the few cases the scheduler acts on differently.

Other tools fail by treating these alike: quota 429s retried as transient (ten retries
in 45 s, and fair-use flags), a rejected key retried forever, a too-long prompt retried
instead of split. Z.AI answers almost everything with HTTP 429, so its business code
decides before the HTTP status does. Messages reach logs, alerts and PR comments, so
they are short, say what a person should do, and never carry an API key, even one a
provider echoes back (`redact`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

import httpx

from workers.providers.redact import echoed_secrets, snippet
from workers.providers.resets import parse_zai_message, reset_from_response, synthetic_limited

__all__ = ["Classified", "ResponseClass", "Usage", "WindowHint", "classify"]

WindowHint = Literal["5h", "weekly", "daily", "credits"]


class ResponseClass(StrEnum):
    """What the scheduler does next: the class, not the status, drives retries."""

    OK = "ok"
    TRANSIENT = "transient"  # short jittered retry, honouring reset_at_ms if set
    WINDOW_EXHAUSTED = "window_exhausted"  # no retry: block the account until reset
    NEEDS_PERSON = "needs_person"  # stop and alert; retrying cannot help
    BAD_REQUEST = "bad_request"  # no retry: re-chunk (too_long) or skip the file
    GARBAGE = "garbage"  # the provider answered but the answer is unusable


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as reported, so real usage can correct the limiter's estimate.
    `cached_tokens` (OpenAI's `prompt_tokens_details.cached_tokens`) are part of
    `prompt_tokens`; `reasoning_tokens` (`completion_tokens_details`) part of
    `completion_tokens`."""

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Classified:
    """One response, reduced to what the scheduler, the logs and a person need."""

    cls: ResponseClass
    code: str
    message: str
    reset_at_ms: int | None = None
    window_hint: WindowHint | None = None
    too_long: bool = False
    # The provider refused for concurrency (Z.AI's 1302): it allows fewer calls in
    # flight than the plan says, so the caller holds the refused slot out of use.
    concurrency_refusal: bool = False
    usage: Usage | None = None
    # Model output can be long: keep reprs (and so log lines) short.
    content: str | None = field(default=None, repr=False)
    cut: bool = False  # `finish_reason: length`: `content` is partial (docs/prompt.md)


_T, _W = ResponseClass.TRANSIENT, ResponseClass.WINDOW_EXHAUSTED
_P, _B, _G = ResponseClass.NEEDS_PERSON, ResponseClass.BAD_REQUEST, ResponseClass.GARBAGE
_PRODUCT = "this key's product does not cover this request; check the plan and base_url"
_BALANCE = (
    "insufficient balance, or a Coding Plan key sent to the pay-per-token base URL; top up, "
    "or use base_url https://api.z.ai/api/coding/paas/v4 for a Coding Plan key"
)
_FAIR_USE = (
    "fair-use restriction on this key; reviewq never retries this automatically: "
    "stop using the key and contact Z.AI support"
)
# The provider allows fewer calls in flight than the plan says (`concurrency_refusal`).
_ZAI_CONCURRENCY = "1302"
_ZAI_CODES: dict[str, tuple[ResponseClass, WindowHint | None, str]] = {
    "1302": (_T, None, "too many concurrent requests; retrying shortly with less concurrency"),
    "1303": (_T, None, "requests too frequent; retrying shortly"),
    "1305": (_T, None, "the model is overloaded; retrying shortly"),
    "1304": (_W, "daily", "daily limit reached"),
    **dict.fromkeys(("1308", "1316", "1318", "1320"), (_W, "5h", "5-hour window used up")),
    **dict.fromkeys(("1310", "1317", "1319", "1321"), (_W, "weekly", "weekly limit used up")),
    "1113": (_P, None, _BALANCE),
    "1309": (_P, None, "the plan has expired; renew it or remove this account"),
    "1311": (_P, None, "the model is not in this plan; configure a model the plan includes"),
    "1313": (_P, None, _FAIR_USE),
    "1314": (_P, None, _PRODUCT),
    "1315": (_P, None, _PRODUCT),
    "1210": (_B, None, "invalid request parameters; not retried"),
    "1211": (_B, None, "unknown model; check the model id in config"),
    "1214": (_B, None, "invalid request; not retried"),
    "1261": (_B, None, "prompt too long for the model; split the input"),
    "1301": (_B, None, "content flagged as unsafe; skip this file"),
}
_SYN_HEADER = "x-synthetic-quotas"
_RETRYABLE_4XX = frozenset({408, 409, 425})
_TOO_LONG = re.compile(
    r"(?i)context[ _-]?(?:length|window)|too[ _-]long|max(?:imum)? (?:context|length)"
)
_NOT_FOUND = (
    "model or endpoint not found; check the model id and base_url "
    "(Synthetic ids look like hf:org/Model and are case-sensitive)"
)
# Monthly windows are reported as weekly: both mean "days away, fail over or park".
_HINT_WORDS: dict[str, WindowHint] = {"5 hour": "5h", "5-hour": "5h", "week": "weekly"}
_HINT_WORDS |= {"month": "weekly", "day": "daily"}


@dataclass(frozen=True, slots=True)
class _Ctx:
    """A parsed response; `text` is the provider's own words, not yet redacted."""

    status: int
    headers: Mapping[str, str]
    data: object
    code: str | None
    text: str
    provider: str
    key_env: str
    secrets: tuple[str, ...]
    now_ms: int

    @property
    def label(self) -> str:
        """Numeric business codes (Z.AI) say more than the status they ride on."""
        return self.code if self.code and self.code.isdigit() else str(self.status)


def classify(
    status: int | None,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now_ms: int,
    error: Exception | None = None,
    provider: str | None = None,
    key_env: str | None = None,
) -> Classified:
    """Classify one response (or the transport error that replaced it).

    `provider` and `key_env` only improve the messages ("the API key in $X was
    rejected"); both are guessed when absent. `now_ms` keeps reset parsing off the
    local clock.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    secrets = echoed_secrets(lower)
    if error is not None and (status is None or isinstance(error, httpx.TransportError)):
        return _from_error(error, provider or "the provider", secrets)
    if status is None:
        return Classified(_G, "none", "no HTTP status and no error: nothing to classify")
    data = _json(body)
    code, text = _envelope(data, body)
    name = provider or _guess_provider(lower, code, text)
    env = f"${key_env}" if key_env else f"${name.upper()}_API_KEY"
    if not key_env and name == "the provider":
        env = "the account's api_key_env"
    ctx = _Ctx(status, lower, data, code, text, name, env, secrets, now_ms)
    if code in _ZAI_CODES:
        return _from_zai(ctx, code)
    return _from_status(ctx)


def _from_error(error: Exception, provider: str, secrets: tuple[str, ...]) -> Classified:
    """No usable response: decide whether the network or the config is to blame."""
    kind = type(error).__name__
    detail = snippet(str(error), secrets)
    if isinstance(error, httpx.UnsupportedProtocol):
        what = "the base_url is not an http(s) URL; fix it in config"
        return Classified(_P, kind, f"{kind} calling {provider}: {what}")
    if isinstance(error, httpx.TimeoutException):
        what = "no answer in time; retrying (large models cold-start: keep the timeout generous)"
        return Classified(_T, kind, f"{kind} from {provider}: {what}")
    if isinstance(error, httpx.TransportError):
        return Classified(_T, kind, f"{kind} talking to {provider} ({detail}); retrying")
    return Classified(_G, kind, f"{kind} calling {provider} ({detail}); the answer is unusable")


def _from_zai(ctx: _Ctx, code: str) -> Classified:
    cls, hint, what = _ZAI_CODES[code]
    if cls is _W:
        return _exhausted(ctx, hint, what)
    if cls is _T:
        return _transient(ctx, what, concurrency_refusal=code == _ZAI_CONCURRENCY)
    if cls is _B:
        return _bad_request(ctx, what, too_long=code == "1261")
    return _needs_person(ctx, what)


def _from_status(ctx: _Ctx) -> Classified:
    """No known business code: the HTTP status (and the body's words) decide."""
    status = ctx.status
    if 200 <= status < 300:
        return _from_ok(ctx)
    if status == 401:
        return _needs_person(ctx, f"the API key in {ctx.key_env} was rejected; check it")
    if status == 403:
        what = f"the API key in {ctx.key_env} may not use this model or endpoint; check its plan"
        return _needs_person(ctx, what)
    if status == 404:
        return _needs_person(ctx, _NOT_FOUND)
    if status == 402:
        return _from_402(ctx)
    if status == 429:
        return _from_429(ctx)
    if status >= 500 or status in _RETRYABLE_4XX:
        return _transient(ctx, "server-side error; retrying shortly")
    if 400 <= status < 500:
        return _bad_request(ctx, "request rejected; not retried", too_long=status == 413)
    return _garbage(ctx, f"unexpected HTTP status {status}")


def _from_402(ctx: _Ctx) -> Classified:
    """Synthetic's 402 is weekly credits that regenerate; elsewhere 402 means billing."""
    low = ctx.text.lower()
    if "insufficient quota" in low or "token balance" in low or _SYN_HEADER in ctx.headers:
        return _exhausted(ctx, "credits", "weekly token credits used up")
    return _needs_person(ctx, "payment required; top up the account or check billing")


def _from_429(ctx: _Ctx) -> Classified:
    """Only a recognizable quota signal blocks the account; a bare 429 is a short wait."""
    low = ctx.text.lower()
    if ctx.code == "insufficient_quota":
        return _needs_person(ctx, "the billing quota is used up; add credit or raise the limit")
    if "subscription rate limits" in low or synthetic_limited(ctx.headers.get(_SYN_HEADER)):
        return _exhausted(ctx, "5h", "5-hour request quota used up")
    for name in ("x-ratelimit-remaining-requests", "anthropic-ratelimit-requests-remaining"):
        if ctx.headers.get(name, "").strip() in {"0", "0.0"}:
            return _exhausted(ctx, None, "request quota used up")
    if parse_zai_message(ctx.text) is not None:
        return _exhausted(ctx, _hint_from_text(low), "usage limit reached")
    return _transient(ctx, "rate limited without a quota signal; retrying after a short wait")


def _from_ok(ctx: _Ctx) -> Classified:
    """A 2xx counts only if it carries a review: an empty answer must never be posted."""
    if not isinstance(ctx.data, Mapping):
        return _garbage(ctx, "the body is not a JSON object")
    choices = ctx.data.get("choices")
    if not isinstance(choices, list) or not choices:
        return _garbage(ctx, "the body has no choices")
    first = choices[0] if isinstance(choices[0], Mapping) else {}
    message = first.get("message")
    content = _content(message.get("content")) if isinstance(message, Mapping) else None
    cut = first.get("finish_reason") == "length"
    if not content:
        why = " (finish_reason=length: raise max_tokens)" if cut else ""
        return _garbage(ctx, f"the first choice has no message content{why}")
    ok, usage = ResponseClass.OK, _usage(ctx.data)
    return Classified(ok, str(ctx.status), "ok", usage=usage, content=content, cut=cut)


def _exhausted(ctx: _Ctx, hint: WindowHint | None, what: str) -> Classified:
    reset = _reset(ctx)
    until = "reset time unknown" if reset is None else f"blocked until {_iso(reset)}"
    return Classified(
        _W, ctx.label, _say(ctx, f"{what}; {until}"), reset_at_ms=reset, window_hint=hint
    )


def _transient(ctx: _Ctx, what: str, *, concurrency_refusal: bool = False) -> Classified:
    """Keep any hinted wait (Retry-After and friends) so the caller can honour it."""
    reset = _reset(ctx)
    if reset is not None:
        what = f"{what} (not before {_iso(reset)})"
    return Classified(
        _T,
        ctx.label,
        _say(ctx, what),
        reset_at_ms=reset,
        concurrency_refusal=concurrency_refusal,
    )


def _bad_request(ctx: _Ctx, what: str, *, too_long: bool) -> Classified:
    too_long = too_long or bool(_TOO_LONG.search(f"{ctx.text} {ctx.code or ''}"))
    if too_long:
        what = "prompt too long for the model's context; split the input into smaller chunks"
    return Classified(_B, ctx.label, _say(ctx, what), too_long=too_long)


def _needs_person(ctx: _Ctx, what: str) -> Classified:
    return Classified(_P, ctx.label, _say(ctx, what))


def _garbage(ctx: _Ctx, what: str) -> Classified:
    return Classified(_G, ctx.label, _say(ctx, f"unusable answer: {what}"))


def _say(ctx: _Ctx, what: str) -> str:
    """`<code> from <provider>: <what to do>`, plus the provider's own words, redacted."""
    said = snippet(ctx.text, ctx.secrets)
    tail = f' (provider said: "{said}")' if said else ""
    return f"{ctx.label} from {ctx.provider}: {what}{tail}"


def _reset(ctx: _Ctx) -> int | None:
    body = ctx.data if ctx.data is not None else ctx.text
    return reset_from_response(ctx.status, ctx.headers, body, ctx.now_ms)


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(body: bytes) -> object:
    try:
        return json.loads(body)
    except (ValueError, TypeError):
        return None


def _envelope(data: object, body: bytes) -> tuple[str | None, str]:
    """(business code, provider's words) from OpenAI/Z.AI `{"error": {...}}`, Anthropic's
    `{"type": "error", ...}`, Synthetic's `{"error": "text"}`, `{"code", "msg"}`, or text."""
    if data is None:
        return None, body.decode("utf-8", errors="replace").strip()
    if not isinstance(data, Mapping):
        return None, ""
    err = data.get("error")
    if isinstance(err, str):
        return None, err
    if isinstance(err, Mapping):
        return _code(err.get("code")), _text(err.get("message")) or _text(err.get("type"))
    if data.get("success") is False:
        return _code(data.get("code")), _text(data.get("msg")) or _text(data.get("message"))
    return None, _text(data.get("message"))


def _code(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return str(value).strip() or None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _content(value: object) -> str | None:
    """Content is a string, or on some OpenAI-compatible servers a list of text parts."""
    if isinstance(value, list):
        parts = [p.get("text") for p in value if isinstance(p, Mapping)]
        value = "".join(p for p in parts if isinstance(p, str))
    return value if isinstance(value, str) and value.strip() else None


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _detail(raw: Mapping[str, object], block: str, name: str) -> int | None:
    details = raw.get(block)
    return _count(details.get(name)) if isinstance(details, Mapping) else None


def _usage(data: Mapping[str, object]) -> Usage | None:
    raw = data.get("usage")
    if not isinstance(raw, Mapping):
        return None
    usage = Usage(
        prompt_tokens=_count(raw.get("prompt_tokens")),
        completion_tokens=_count(raw.get("completion_tokens")),
        total_tokens=_count(raw.get("total_tokens")),
        cached_tokens=_detail(raw, "prompt_tokens_details", "cached_tokens"),
        reasoning_tokens=_detail(raw, "completion_tokens_details", "reasoning_tokens"),
    )
    return usage if usage != Usage() else None


def _hint_from_text(low: str) -> WindowHint | None:
    return next((hint for word, hint in _HINT_WORDS.items() if word in low), None)


def _guess_provider(headers: Mapping[str, str], code: str | None, text: str) -> str:
    """Best effort, for messages only: the caller normally passes `provider`."""
    if _SYN_HEADER in headers or "subscription rate limits" in text.lower():
        return "synthetic"
    if code is not None and code.isdigit() and 1000 <= int(code) < 2000:
        return "zai"
    if any(name.startswith("anthropic-") for name in headers):
        return "anthropic"
    if any(name.startswith("x-ratelimit-") for name in headers):
        return "openai"
    return "the provider"
