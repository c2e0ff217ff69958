"""A record of every API exchange a fake serves, for checking against GitHub's description.

The fake is a referee only if what it answers is what GitHub answers. The test suite
sets `REVIEWQ_GITHUB_EXCHANGE_LOG` to a directory; each fake (in the test process or
in a child, such as `reviewq sandbox github`) then appends one JSON line per request
to a file of its own there, and the tests check every line against GitHub's OpenAPI
description: the fake's answer against the response schema, the client's request
against the request schema. Off (the default), nothing is recorded.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from pathlib import Path
from typing import Any

__all__ = ["ExchangeLog"]

_SEQUENCE = itertools.count()
# The request headers the checks read: the ones GitHub requires or interprets.
_REQUEST_HEADERS = ("accept", "user-agent", "x-github-api-version", "content-type")


class ExchangeLog:
    """One JSON-lines file per fake; a line is written whole, under a lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    @classmethod
    def open(cls, directory: str | None) -> ExchangeLog | None:
        if not directory:
            return None
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder / f"github-{os.getpid()}-{next(_SEQUENCE)}.jsonl")

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
        line = json.dumps(
            {
                "operation": operation,
                "method": method,
                "status": status,
                "request": request,
                "response": response,
            }
        )
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")

    @staticmethod
    def request_headers(headers: Any) -> dict[str, str]:
        return {name: headers[name] for name in _REQUEST_HEADERS if name in headers}
