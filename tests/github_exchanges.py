"""Every exchange with a fake GitHub, in every test, checked against GitHub's description.

Imported by `conftest.py`. At import it points `REVIEWQ_GITHUB_EXCHANGE_LOG` at a
fresh directory, so every fake GitHub the suite starts (in this process or in a
child: the chaos suite's, `reviewq sandbox github`) records its exchanges there. After
each test, the autouse fixture reads what was recorded since the last check and fails
the test if one answer of the fake does not match GitHub's response schema, or one
request of reviewq's client (its `User-Agent` says so) does not match the request
schema or lacks the headers GitHub asks for. The session ends with a count.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from github_openapi import API_VERSION, description

from scheduler.sandbox.github.state import EXCHANGE_LOG_ENV

__all__ = ["check_exchange", "github_exchanges_match_the_description", "pytest_terminal_summary"]

if not os.environ.get(EXCHANGE_LOG_ENV):
    _made = tempfile.mkdtemp(prefix="reviewq-github-exchanges-")
    os.environ[EXCHANGE_LOG_ENV] = _made
    atexit.register(shutil.rmtree, _made, True)
LOG_DIR = Path(os.environ[EXCHANGE_LOG_ENV])

# GitHub's paging links name the repository by id, and carry the page parameters.
_PAGE_LINK = re.compile(
    r"<https?://[^/>]+/repositories/\d+/pulls/\d+/(files|reviews)\?per_page=\d+&page=\d+>; "
    r'rel="(prev|next|last|first)"'
)
_CLIENT_HEADERS = {"accept": "application/vnd.github+json", "x-github-api-version": API_VERSION}

_offsets: dict[Path, int] = {}
responses: Counter[tuple[str, str, int]] = Counter()
requests: Counter[tuple[str, str]] = Counter()


def check_exchange(record: dict[str, Any]) -> list[str]:
    """What in one recorded exchange GitHub's description (or GitHub) disagrees with."""
    method, operation, status = record["method"], record["operation"], record["status"]
    answer, asked = record["response"], record["request"]
    problems: list[str] = []
    if answer["content_type"].startswith("application/json"):
        problems += description().response_errors(method, operation, status, answer.get("json"))
    elif not (status == 403 and answer["content_type"].startswith("text/plain")):
        problems.append(f"a {status} answered as {answer['content_type']!r}, not JSON")
    for link in filter(None, (answer.get("link") or "").split(", ")):
        if not _PAGE_LINK.fullmatch(link):
            problems.append(f"Link is not in GitHub's form: {link}")
    responses[(method, operation, status)] += 1
    if asked["headers"].get("user-agent", "").startswith("reviewq"):
        requests[(method, operation)] += 1
        for name, value in _CLIENT_HEADERS.items():
            if asked["headers"].get(name) != value:
                problems.append(f"the client sent {name}: {asked['headers'].get(name)!r}")
        body = asked.get("json")
        problems += description().request_errors(method, operation, body, asked["query"])
    return [f"{method} {operation} -> {status}: {p}" for p in problems]


def _new_records() -> Iterator[dict[str, Any]]:
    for path in sorted(LOG_DIR.glob("github-*.jsonl")):
        with path.open("rb") as log:
            log.seek(_offsets.get(path, 0))
            data = log.read()
        whole = data[: data.rfind(b"\n") + 1]  # a line still being written waits
        _offsets[path] = _offsets.get(path, 0) + len(whole)
        for line in whole.splitlines():
            yield json.loads(line)


@pytest.fixture(autouse=True)
def github_exchanges_match_the_description() -> Iterator[None]:
    yield
    problems = [p for record in _new_records() for p in check_exchange(record)]
    if problems:
        shown = "\n".join(problems[:20])
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        pytest.fail(f"the fake GitHub or the client left GitHub's description:\n{shown}{more}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not responses:
        return
    terminalreporter.write_line(
        f"GitHub exchanges checked against the OpenAPI description: "
        f"{sum(responses.values())} fake responses ({len(responses)} distinct operation and "
        f"status pairs), {sum(requests.values())} client requests ({len(requests)} operations)"
    )
