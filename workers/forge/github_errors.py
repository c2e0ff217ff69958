"""What a GitHub answer that is not a success means: typed errors sorted by what the
caller does next (wait until `retry_at_ms`, reschedule, alert a person, fold the
comments), and the reading of GitHub's rate-limit headers and error bodies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import httpx

from workers.providers.resets import parse_epoch, parse_retry_after

__all__ = [
    "DEFAULT_RETRY_AFTER_S",
    "GitHubAuthError",
    "GitHubError",
    "GitHubNotFound",
    "GitHubRateLimited",
    "GitHubServerError",
    "GitHubTransportError",
    "GitHubUnprocessable",
    "error_for_response",
    "json_or_none",
    "redact",
    "retry_advice",
    "retry_at_ms",
    "unadvised_wait_ms",
]

# GitHub's advice for a secondary limit that names no time: wait at least a minute,
# and, if the limit is met again, exponentially longer each time.
DEFAULT_RETRY_AFTER_S = 60
MAX_UNADVISED_WAIT_S = 30 * 60
# A 403 is a rate limit in these words too: GitHub's older secondary-limit answer
# says "abuse detection mechanism" and not "rate limit".
_LIMIT_WORDS = ("rate limit", "abuse detection")


class GitHubError(Exception):
    """A call that did not succeed; `status` is None when no response came back.

    Messages name the method and path and quote GitHub's own words, never the token.
    """

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(status, message)
        self.status, self.message = status, message

    def __str__(self) -> str:
        return f"GitHub {self.status}: {self.message}" if self.status else f"GitHub: {self.message}"


class GitHubAuthError(GitHubError):
    """401: the token is wrong, expired or revoked; retrying cannot help."""


class GitHubNotFound(GitHubError):
    """404, which GitHub also answers for a private repo the token cannot see."""


class GitHubRateLimited(GitHubError):
    """403/429 for a primary or secondary rate limit: nothing happened; retry at
    `retry_at_ms`. `advised` False: GitHub named no time and `retry_at_ms` is the
    one-minute floor, which a caller meeting the limit again should grow
    (`unadvised_wait_ms`)."""

    def __init__(
        self, status: int | None, message: str, retry_at_ms: int, advised: bool = True
    ) -> None:
        Exception.__init__(self, status, message, retry_at_ms, advised)
        self.status, self.message, self.retry_at_ms = status, message, retry_at_ms
        self.advised = advised


class GitHubUnprocessable(GitHubError):
    """422: GitHub refused the content (for reviews, usually a line outside the diff)."""

    def __init__(self, status: int | None, message: str, errors: tuple[str, ...] = ()) -> None:
        Exception.__init__(self, status, message, errors)
        self.status, self.message, self.errors = status, message, errors


class GitHubServerError(GitHubError):
    """5xx: GitHub may or may not have acted (a review POST can land and still 502)."""


class GitHubTransportError(GitHubError):
    """No usable answer (connect, timeout, garbage); `maybe_sent` False: GitHub saw nothing."""

    def __init__(self, status: int | None, message: str, maybe_sent: bool = True) -> None:
        Exception.__init__(self, status, message, maybe_sent)
        self.status, self.message, self.maybe_sent = status, message, maybe_sent


def retry_advice(headers: Mapping[str, str], now_ms: int) -> tuple[int, bool]:
    """When a rate-limited request may be retried, in GitHub's documented order, and
    whether GitHub named that time.

    `retry-after` first; then `x-ratelimit-reset`, but only when `x-ratelimit-remaining`
    is 0 (on a secondary limit the reset is the primary window's end, up to an hour
    away); else one minute, unadvised.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    if "retry-after" in lower:
        at = parse_retry_after(lower["retry-after"], now_ms)
        if at is not None:
            return max(at, now_ms), True
    if lower.get("x-ratelimit-remaining", "").strip() == "0":
        reset = parse_epoch(lower.get("x-ratelimit-reset"))
        if reset is not None:
            return max(reset, now_ms), True
    return now_ms + DEFAULT_RETRY_AFTER_S * 1000, False


def retry_at_ms(headers: Mapping[str, str], now_ms: int) -> int:
    """`retry_advice`'s time alone, for callers that do not grow their waits."""
    return retry_advice(headers, now_ms)[0]


def unadvised_wait_ms(attempt: int) -> int:
    """The wait before retry `attempt + 1` of a call that met a rate limit naming no
    time, `attempt` retries in: a minute, doubling each time (GitHub: "wait for an
    exponentially increasing amount of time between retries"), at most half an hour."""
    seconds = DEFAULT_RETRY_AFTER_S << min(max(attempt, 0), 16)
    return min(seconds, MAX_UNADVISED_WAIT_S) * 1000


def error_for_response(
    response: httpx.Response, what: str, now_ms: int, *, secrets: Sequence[str] = ()
) -> GitHubError:
    """The exception for a non-2xx answer; `what` (method and path) starts the message.

    A 403 is a rate limit only when GitHub says so: its words (today's "rate limit"
    or the older "abuse detection"), `remaining: 0`, or a `retry-after`, which GitHub
    sends with no permission error; else it is a permission problem and stays a plain
    `GitHubError`. `secrets` are cut out of GitHub's words, in case a proxy echoes a
    header back.
    """
    status = response.status_code
    data = json_or_none(response)
    said = redact(_github_message(data, response), secrets)
    message = f"{what}: {said}"
    if status == 401:
        return GitHubAuthError(status, message)
    if status == 429 or (status == 403 and _is_rate_limit(response, said)):
        at, advised = retry_advice(response.headers, now_ms)
        return GitHubRateLimited(status, message, at, advised)
    if status == 404:
        return GitHubNotFound(status, message)
    if status == 422:
        errors = tuple(redact(e, secrets) for e in _errors(data))
        detail = f" ({'; '.join(errors)})" if errors else ""
        return GitHubUnprocessable(status, message + detail, errors)
    if status >= 500:
        return GitHubServerError(status, message)
    return GitHubError(status, message)


def _is_rate_limit(response: httpx.Response, said: str) -> bool:
    headers = response.headers
    if headers.get("x-ratelimit-remaining", "").strip() == "0" or "retry-after" in headers:
        return True
    return any(words in said.lower() for words in _LIMIT_WORDS)


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in filter(None, secrets):
        text = text.replace(secret, "[redacted]")
    return text


def json_or_none(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return None


def _github_message(data: object, response: httpx.Response) -> str:
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])[:300]
    return response.reason_phrase or f"HTTP {response.status_code}"


def _errors(data: object) -> tuple[str, ...]:
    """GitHub's `errors` holds strings or objects (resource, field, code, message)."""
    raw = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        return ()
    fields = ("resource", "field", "code")
    return tuple(
        item
        if isinstance(item, str)
        else str(item.get("message") or " ".join(str(item[k]) for k in fields if k in item))
        for item in raw
        if isinstance(item, str | dict)
    )
