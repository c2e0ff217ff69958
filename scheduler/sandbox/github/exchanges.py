"""A record of every API exchange a fake serves, for checking against GitHub's description.

The fake is a referee only if what it answers is what GitHub answers. The test suite
sets `REVIEWQ_GITHUB_EXCHANGE_LOG` to a directory; each fake (in the test process or
in a child, such as `reviewq sandbox github`) then appends one JSON line per request
to a file of its own there, and the tests check every line against GitHub's OpenAPI
description: the fake's answer against the response schema, the client's request
against the request schema. Off (the default), nothing is recorded.
"""

from __future__ import annotations

from typing import Any

from scheduler.sandbox.exchanges import JsonLinesLog

__all__ = ["ExchangeLog"]

# The request headers the checks read: the ones GitHub requires or interprets.
_REQUEST_HEADERS = ("accept", "user-agent", "x-github-api-version", "content-type")


class ExchangeLog(JsonLinesLog):
    """The fake GitHub's exchanges, one JSON line each."""

    prefix = "github"

    def write(
        self,
        *,
        operation: str,
        method: str,
        status: int,
        request: dict[str, Any],
        response: dict[str, Any],
    ) -> None:
        """`operation` is the path template of GitHub's description (`/user`,
        `/repos/{owner}/{repo}/pulls/{pull_number}/files`...), whatever URL was asked."""
        self.append(
            {
                "operation": operation,
                "method": method,
                "status": status,
                "request": request,
                "response": response,
            }
        )

    @staticmethod
    def request_headers(headers: Any) -> dict[str, str]:
        return {name: headers[name] for name in _REQUEST_HEADERS if name in headers}
