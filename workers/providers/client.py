"""One HTTP call to one account's OpenAI-compatible endpoint, reduced to a `Classified`.

The scheduler is the only retry loop: hidden SDK or transport retries doubled other
tools' retry loops and burned quota, so the transport here is built with `retries=0`
and every failure comes back as a result instead of an exception. The key is read
from the account's environment variable at call time and lives only in the request's
headers; it is scrubbed from every message this module produces.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field

from scheduler.config import ConfigError, api_key
from scheduler.quota.plans import Account
from scheduler.quota.timeofday import IDENTITY, Calendar
from workers.providers.classify import Classified, ResponseClass, Usage, classify
from workers.providers.costs import MONEY_CHARGE_MILLI, CallBound, request_cost, usage_cost
from workers.providers.redact import SECRET_HEADERS

__all__ = [
    "DEFAULT_TIMEOUT",
    "MISSING_KEY",
    "MONEY_CHARGE_MILLI",
    "CallBound",
    "ChatMessage",
    "ChatRequest",
    "JsonFetch",
    "ProviderClient",
    "ProviderResult",
    "ResponseFormat",
    "estimate_prompt_tokens",
    "output_bound",
    "request_cost",
    "usage_cost",
]

log = logging.getLogger(__name__)

# Large models cold-start: the first call after idle can take minutes to answer.
DEFAULT_TIMEOUT = httpx.Timeout(connect=10.0, read=300.0, write=30.0, pool=10.0)
_QUOTA_TIMEOUT = httpx.Timeout(connect=10.0, read=30.0, write=10.0, pool=10.0)
# The code of a call never sent because the account's key variable is unset.
MISSING_KEY = "missing_key"
# Errors raised before a single byte reached the provider: nothing can have been spent.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class ResponseFormat(BaseModel):
    """OpenAI's `response_format`: `json_object` asks for an answer that is one JSON
    object. Sent only when `[review] response_format` says the provider supports it;
    an endpoint that does not may refuse the whole request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["json_object", "text"] = "json_object"


class ChatRequest(BaseModel):
    """The body of one chat completion; job data, so it must never hold a key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(min_length=1)
    messages: tuple[ChatMessage, ...] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    # Z.AI's reasoning switch, as the seeds show it: `{"type": "disabled"}`, or
    # `{"type": "enabled", "budget_tokens": N}` to bound what reasoning may bill.
    thinking: dict[str, str | int] | None = None
    response_format: ResponseFormat | None = None

    def payload(self) -> dict[str, Any]:
        return {"stream": False, **self.model_dump(mode="json", exclude_none=True)}

    @property
    def output_bound(self) -> int | None:
        return output_bound(self.max_tokens, self.thinking)


def output_bound(max_tokens: int | None, thinking: Mapping[str, str | int] | None) -> int | None:
    """The most completion tokens (reasoning included) a call can bill: `max_tokens`,
    plus the thinking budget when thinking is on, since providers differ on whether
    reasoning counts inside `max_tokens`. None: unbounded."""
    if max_tokens is None:
        return None
    thinking = thinking or {}
    if thinking.get("type") == "disabled":
        return max_tokens
    budget = thinking.get("budget_tokens")
    return max_tokens + budget if isinstance(budget, int) else None


def estimate_prompt_tokens(request: ChatRequest, chars_per_token: float = 4.0) -> int:
    """Characters / 4 per message, as the planner counts: the estimate the learned
    input bound (`scheduler.quota.tokenbound`) multiplies."""
    return sum(math.ceil(len(m.content) / chars_per_token) for m in request.messages)


@dataclass(frozen=True, slots=True)
class ProviderResult:
    """What one call produced. `sent` is False only when the provider cannot have seen
    the request, which is the one case where its charge is refunded unconditionally.

    `cost` is the actual cost per plan window (milli-units) when the provider reported
    usage; None means the acquire-time estimate stands. `headers` excludes credentials.
    """

    classified: Classified
    account: str
    model: str
    status: int | None
    elapsed_ms: int
    sent: bool
    started_at: dt.datetime
    cost: dict[str, int] | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    # The latest instant the provider may have counted the request at (calendar time):
    # a credit plan charges the highest time factor from `started_at` to it.
    arrival_until: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class JsonFetch:
    """A side-channel GET (quota endpoints): the parsed body, or why there is none."""

    status: int | None
    data: object
    error: str | None = None


class ProviderClient:
    """`POST {base_url}/chat/completions` for one account, with no retries of its own."""

    def __init__(
        self,
        account: Account,
        *,
        env: Mapping[str, str] = os.environ,
        transport: httpx.BaseTransport | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        calendar: Callable[[], Calendar] = lambda: IDENTITY,
    ) -> None:
        self.account = account
        self._env = env
        self.timeout = timeout
        self.calendar = calendar
        # httpx retries nothing by default; `retries=0` says so where a reader looks.
        self._http = httpx.Client(
            transport=transport or httpx.HTTPTransport(retries=0),
            timeout=timeout,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        a = self.account
        return (
            f"ProviderClient(account={a.name!r}, base_url={a.base_url!r}, key_env={a.api_key_env})"
        )

    def close(self) -> None:
        self._http.close()

    @property
    def origin(self) -> str:
        """`scheme://host[:port]` of the base URL: quota endpoints live beside the API."""
        parts = urlsplit(self.account.base_url)
        return f"{parts.scheme}://{parts.netloc}"

    def complete(self, request: ChatRequest, *, now_ms: int | None = None) -> ProviderResult:
        """One attempt, never raised out of: every failure is a classified result.

        `now_ms` (the caller's clock at the start) anchors relative reset hints such
        as `Retry-After` and the time-of-day cost weight, so the settled cost matches
        the estimate the caller charged; without it the local clock is used. It is read
        on the calendar (`scheduler.quota.timeofday`), which a simulation compresses.
        """
        calendar = self.calendar()
        started = calendar.at(now_ms if now_ms is not None else time.time_ns() // 1_000_000)
        t0 = time.monotonic()
        key = self._key()
        if key is None:
            missing = self._missing_key()
            return self._result(request, started, t0, missing, status=None, sent=False)
        url = self.account.base_url.rstrip("/") + "/chat/completions"
        headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        try:
            response = self._http.post(url, json=request.payload(), headers=headers)
        except httpx.HTTPError as exc:
            now = _elapsed_now(now_ms, t0)
            c = classify(None, {}, b"", now_ms=now, error=exc, provider=self.account.provider)
            sent = not isinstance(exc, _NOT_SENT)
            return self._result(request, started, t0, _scrub(c, key), status=None, sent=sent)
        except (httpx.InvalidURL, ValueError) as exc:
            c = self._unsendable(exc)
            return self._result(request, started, t0, c, status=None, sent=False)
        c = classify(
            response.status_code,
            response.headers,
            response.content,
            now_ms=_elapsed_now(now_ms, t0),
            provider=self.account.provider,
            key_env=self.account.api_key_env,
        )
        result = self._result(
            request,
            started,
            t0,
            _scrub(c, key),
            status=response.status_code,
            sent=True,
            headers=_safe_headers(response.headers),
        )
        if c.cls is ResponseClass.OK and c.usage is not None:
            result = dataclasses.replace(result, cost=self.actual_cost(result))
        return result

    def arrival_until(self, started: dt.datetime) -> dt.datetime:
        """The latest arrival a grant made at `started` can have: the arrival margin
        later, on the calendar."""
        return started + self.calendar().span(self.account.policy.arrival_margin_ms)

    def actual_cost(self, result: ProviderResult) -> dict[str, int] | None:
        """The hook for usage-based settling: cost per plan window, in milli-units.

        Request-counted windows cost the model's weight at the time of the call (peak
        hours included); credit windows the call's tokens as `usage` reports them, at
        its model's price and the time factor its grant paid (`usage_cost`). None keeps
        the grant's charge (a credit plan's answer without token counts).
        """
        usage = result.classified.usage or Usage()
        until = result.arrival_until or self.arrival_until(result.started_at)
        return usage_cost(self.account, result.model, usage, result.started_at, until)

    def get_json(self, url: str, *, auth: Literal["bearer", "raw"] = "bearer") -> JsonFetch:
        """A GET with the account's key (Z.AI's quota endpoint wants it without `Bearer`).

        Never raises: quota polling is advisory and must not break a job.
        """
        key = self._key()
        if key is None:
            return JsonFetch(None, None, f"environment variable {self.account.api_key_env} unset")
        value = f"Bearer {key}" if auth == "bearer" else key
        try:
            response = self._http.get(url, headers={"Authorization": value}, timeout=_QUOTA_TIMEOUT)
        except httpx.HTTPError as exc:
            return JsonFetch(None, None, _scrub_text(f"{type(exc).__name__}: {exc}", key))
        except (httpx.InvalidURL, ValueError) as exc:
            return JsonFetch(None, None, f"{type(exc).__name__}: the request could not be built")
        try:
            data: object = response.json()
        except ValueError:
            return JsonFetch(response.status_code, None, "the body is not JSON")
        if not response.is_success:
            return JsonFetch(response.status_code, data, f"HTTP {response.status_code}")
        return JsonFetch(response.status_code, data)

    def key_missing(self) -> str | None:
        """Why this account cannot be called now (its key variable is unset), or None.
        Checked before budget is taken: a missing key is configuration, not an outage."""
        return None if self._key() is not None else self._missing_key().message

    def _missing_key(self) -> Classified:
        """Names the variable, never a value: the message may reach a PR comment."""
        var, name = self.account.api_key_env, self.account.name
        msg = f"environment variable {var} is not set; set it to the API key of account {name!r}"
        return Classified(ResponseClass.NEEDS_PERSON, MISSING_KEY, msg)

    def _unsendable(self, exc: Exception) -> Classified:
        """The request could not even be built: a config problem, not a network one.

        The exception text is left out: a header-encoding error may quote the key.
        """
        if isinstance(exc, httpx.InvalidURL):
            what = f"base_url {self.account.base_url!r} is not a valid URL; fix it in config"
        else:
            what = (
                f"the request could not be encoded ({type(exc).__name__}); check that "
                f"{self.account.api_key_env} holds only the key (no spaces or non-ASCII)"
            )
        return Classified(ResponseClass.NEEDS_PERSON, type(exc).__name__, what)

    def _key(self) -> str | None:
        try:
            return api_key(self.account, self._env)
        except ConfigError:
            return None

    def _result(
        self,
        request: ChatRequest,
        started: dt.datetime,
        t0: float,
        classified: Classified,
        *,
        status: int | None,
        sent: bool,
        headers: Mapping[str, str] | None = None,
    ) -> ProviderResult:
        elapsed = round((time.monotonic() - t0) * 1000)
        log.info(
            "provider call account=%s model=%s status=%s class=%s code=%s elapsed_ms=%d",
            self.account.name,
            request.model,
            status,
            classified.cls.value,
            classified.code,
            elapsed,
        )
        return ProviderResult(
            classified=classified,
            account=self.account.name,
            model=request.model,
            status=status,
            elapsed_ms=elapsed,
            sent=sent,
            started_at=started,
            headers=headers or {},
            arrival_until=self.arrival_until(started),
        )


def _elapsed_now(start_ms: int | None, t0: float) -> int:
    if start_ms is None:
        return time.time_ns() // 1_000_000
    return start_ms + round((time.monotonic() - t0) * 1000)


def _scrub_text(text: str, key: str) -> str:
    return text.replace(key, "[redacted]") if key else text


def _scrub(classified: Classified, key: str) -> Classified:
    """classify() already redacts what looks like a key; this removes our key literally,
    whatever it looks like, in case a provider or an exception echoed it."""
    if key not in classified.message and key not in classified.code:
        return classified
    return dataclasses.replace(
        classified,
        code=_scrub_text(classified.code, key),
        message=_scrub_text(classified.message, key),
    )


def _safe_headers(headers: httpx.Headers) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower() not in SECRET_HEADERS}
