"""What a GitLab answer that is not a success means: typed errors sorted by what the
caller does next (wait until `retry_at_ms`, reschedule, alert a person, fold a
comment into the summary note), and the reading of GitLab's rate-limit headers.

GitLab's shapes differ from GitHub's: a rate limit is a 429 (never a 403) with
`Retry-After` and the `RateLimit-*` headers (`RateLimit-Reset` in epoch seconds,
`RateLimit-ResetTime` as an HTTP date), though some limits send none of them; an error
body is `{"message": ...}` where `message` may be a string, an object of field errors,
or absent (`{"error": ...}`, or plain text from the load balancer).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import httpx

from workers.providers.resets import parse_epoch, parse_retry_after

__all__ = [
    "DEFAULT_RETRY_AFTER_S",
    "GitLabAuthError",
    "GitLabBadRequest",
    "GitLabError",
    "GitLabNotFound",
    "GitLabRateLimited",
    "GitLabServerError",
    "GitLabTransportError",
    "error_for_response",
    "gitlab_message",
    "redact",
    "retry_at_ms",
]

# A 429 that names no time: GitLab's own limits are per minute.
DEFAULT_RETRY_AFTER_S = 60
_SAID = 300  # characters of GitLab's words kept in a message


class GitLabError(Exception):
    """A call that did not succeed; `status` is None when no response came back.

    Messages name the method and path and quote GitLab's own words, never the token.
    """

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(status, message)
        self.status, self.message = status, message

    def __str__(self) -> str:
        return f"GitLab {self.status}: {self.message}" if self.status else f"GitLab: {self.message}"


class GitLabAuthError(GitLabError):
    """401: the token is wrong, expired or revoked (or 403: it lacks the `api` scope
    or access to the project); retrying cannot help, a person must act."""


class GitLabNotFound(GitLabError):
    """404, which GitLab also answers for a project the token cannot see."""


class GitLabBadRequest(GitLabError):
    """400 or 422: GitLab refused the content. For a discussion, usually a position
    that is not a line of the diff (`line_code ... must be a valid line code`)."""


class GitLabRateLimited(GitLabError):
    """429: nothing happened; retry at `retry_at_ms` (epoch ms)."""

    def __init__(self, status: int | None, message: str, retry_at_ms: int) -> None:
        Exception.__init__(self, status, message, retry_at_ms)
        self.status, self.message, self.retry_at_ms = status, message, retry_at_ms


class GitLabServerError(GitLabError):
    """5xx: GitLab may or may not have acted (a note POST can land and still 502)."""


class GitLabTransportError(GitLabError):
    """No usable answer (connect, timeout, garbage); `maybe_sent` False: GitLab saw nothing."""

    def __init__(self, status: int | None, message: str, maybe_sent: bool = True) -> None:
        Exception.__init__(self, status, message, maybe_sent)
        self.status, self.message, self.maybe_sent = status, message, maybe_sent


def retry_at_ms(headers: Mapping[str, str], now_ms: int) -> int:
    """When a rate-limited request may be retried: `Retry-After` (seconds or a date),
    else `RateLimit-Reset` (epoch seconds), else `RateLimit-ResetTime` (a date), else
    a minute. A time in the past means now."""
    lower = {k.lower(): v for k, v in headers.items()}
    if "retry-after" in lower:
        at = parse_retry_after(lower["retry-after"], now_ms)
        if at is not None:
            return max(at, now_ms)
    reset = parse_epoch(lower.get("ratelimit-reset"))
    if reset is not None:
        return max(reset, now_ms)
    if "ratelimit-resettime" in lower:
        at = parse_retry_after(lower["ratelimit-resettime"], now_ms)
        if at is not None:
            return max(at, now_ms)
    return now_ms + DEFAULT_RETRY_AFTER_S * 1000


def error_for_response(
    response: httpx.Response, what: str, now_ms: int, *, secrets: Sequence[str] = ()
) -> GitLabError:
    """The exception for a non-2xx answer; `what` (method and path) starts the message.
    `secrets` are cut out of GitLab's words, in case a proxy echoes a header back."""
    status = response.status_code
    message = f"{what}: {redact(gitlab_message(response), secrets)}"
    if status == 429:
        return GitLabRateLimited(status, message, retry_at_ms(response.headers, now_ms))
    if status in (401, 403):
        return GitLabAuthError(status, message)
    if status == 404:
        return GitLabNotFound(status, message)
    if status in (400, 422):
        return GitLabBadRequest(status, message)
    if status >= 500:
        return GitLabServerError(status, message)
    return GitLabError(status, message)


def redact(text: str, secrets: Sequence[str]) -> str:
    for secret in filter(None, secrets):
        text = text.replace(secret, "[redacted]")
    return text


def gitlab_message(response: httpx.Response) -> str:
    """GitLab's words: `message` (a string, or field errors as an object), else
    `error`, else the body's text, else the reason phrase."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        said = data.get("message", data.get("error"))
        if isinstance(said, str):
            return said[:_SAID]
        if said is not None:
            return json.dumps(said)[:_SAID]
    text = response.text.strip() if response.content else ""
    return text[:_SAID] or response.reason_phrase or f"HTTP {response.status_code}"
