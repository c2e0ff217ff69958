"""A record of every API exchange the fake GitLab serves, for checking against GitLab's docs.

The fake is a referee only if what it answers is what GitLab answers. The test suite
sets `REVIEWQ_GITLAB_EXCHANGE_LOG` to a directory; each fake (in the test process or
in a child, such as the demo's) then appends one JSON line per API request to a file
of its own there, and the tests check every line against the schemas written from
GitLab's API documentation. The token is never written: only which way it was sent.
Off (the default), nothing is recorded.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from scheduler.sandbox.exchanges import JsonLinesLog
from scheduler.sandbox.gitlab.paging import raw_path

__all__ = ["EXCHANGE_LOG_ENV", "ExchangeLog", "record_exchange"]

# A directory: when set, every fake GitLab appends each API exchange to a file there.
EXCHANGE_LOG_ENV = "REVIEWQ_GITLAB_EXCHANGE_LOG"
_REQUEST_HEADERS = ("accept", "content-type", "user-agent")
_RESPONSE_HEADERS = (
    "link",
    "x-page",
    "x-per-page",
    "x-total",
    "x-total-pages",
    "x-next-page",
    "x-prev-page",
    "retry-after",
    "ratelimit-name",
    "ratelimit-limit",
    "ratelimit-observed",
    "ratelimit-remaining",
    "ratelimit-reset",
    "ratelimit-resettime",
)
_TEXT_KEPT = 2000


class ExchangeLog(JsonLinesLog):
    """The fake GitLab's exchanges, one JSON line each."""

    prefix = "gitlab"

    def write(self, record: dict[str, Any]) -> None:
        self.append(record)


def _parsed(raw: bytes) -> dict[str, Any]:
    try:
        return {"json": json.loads(raw)} if raw else {}
    except ValueError:
        return {"text": raw.decode("utf-8", "replace")[:_TEXT_KEPT]}


def _auth(request: Request) -> str | None:
    """How the token came, never the token: GitLab takes either header."""
    if "private-token" in request.headers:
        return "private-token"
    scheme = request.headers.get("authorization", "").strip().partition(" ")[0]
    return "bearer" if scheme.lower() == "bearer" else None


async def record_exchange(request: Request, operation: str, response: Response) -> None:
    """Append the exchange under `operation` ("GET /projects/:id/merge_requests/:iid"...),
    when the app keeps a log."""
    log: ExchangeLog | None = getattr(request.app.state, "gitlab_exchanges", None)
    if log is None:
        return
    headers, sent = request.headers, response.headers
    log.write(
        {
            "operation": operation,
            "status": response.status_code,
            "request": {
                "path": raw_path(request),
                "auth": _auth(request),
                "headers": {n: headers[n] for n in _REQUEST_HEADERS if n in headers},
                "query": dict(request.query_params),
                **_parsed(await request.body()),
            },
            "response": {
                "content_type": response.headers.get("content-type", ""),
                "headers": {n: sent[n] for n in _RESPONSE_HEADERS if n in sent},
                **_parsed(bytes(getattr(response, "body", b""))),
            },
        }
    )
