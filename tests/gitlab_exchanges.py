"""Every exchange with a fake GitLab, in every test, checked against GitLab's API docs.

Imported by `conftest.py`. At import it points `REVIEWQ_GITLAB_EXCHANGE_LOG` at a fresh
directory, so every fake GitLab the suite starts (in this process or in a child)
records its exchanges there. After each test, the autouse fixture reads what was
recorded since the last check and fails the test if one answer of the fake is not what
GitLab documents (the body's schema, the paging headers, a 401's words, a 429's
`RateLimit-*` headers), or one request of reviewq's client (its `User-Agent` says so)
lacks a token or does not match the request's parameters. The session ends with a count.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from gitlab_api import is_count, reference

from scheduler.sandbox.gitlab.exchanges import EXCHANGE_LOG_ENV

__all__ = ["check_exchange", "gitlab_exchanges_match_the_docs", "pytest_configure"]

if not os.environ.get(EXCHANGE_LOG_ENV):
    _made = tempfile.mkdtemp(prefix="reviewq-gitlab-exchanges-")
    os.environ[EXCHANGE_LOG_ENV] = _made
    atexit.register(shutil.rmtree, _made, True)
LOG_DIR = Path(os.environ[EXCHANGE_LOG_ENV])

# doc/api/rest/_index.md, "Pagination": the headers of a page, and the order of its links.
_PAGE_HEADERS = ("x-page", "x-per-page", "x-next-page", "x-prev-page")
_RELS = ("prev", "next", "first", "last")
# doc/administration/settings/user_and_ip_rate_limits.md, "Response headers".
_RATE_COUNTS = ("ratelimit-limit", "ratelimit-observed", "ratelimit-remaining", "ratelimit-reset")
_UNAUTHORIZED = {"message": "401 Unauthorized"}

_offsets: dict[Path, int] = {}
responses: Counter[tuple[str, int]] = Counter()
requests: Counter[str] = Counter()


def _links(value: str) -> list[tuple[str, str]]:
    found = []
    for part in filter(None, (p.strip() for p in value.split(","))):
        url, _, rel = part.partition(">; rel=")
        found.append((url.lstrip("<"), rel.strip('"')))
    return found


def _counts_problems(headers: dict[str, str], items: object) -> list[str]:
    counted = ("x-page", "x-per-page", *(h for h in ("x-total", "x-total-pages") if h in headers))
    problems = [f"{h} is not a count" for h in counted if not is_count(headers[h])]
    if ("x-total" in headers) != ("x-total-pages" in headers):
        problems.append("x-total and x-total-pages come together or not at all")
    per_page = headers["x-per-page"]
    if isinstance(items, list) and is_count(per_page) and len(items) > int(per_page):
        problems.append(f"{len(items)} items on a page of {per_page}")
    return problems


def paging_problems(path: str, headers: dict[str, str], items: object) -> list[str]:
    """A page's `x-*` headers and `Link` as GitLab sends them, agreeing with each other;
    each link the listing's own `path`, as the client sent it."""
    missing = [h for h in _PAGE_HEADERS if h not in headers]
    if missing:
        return [f"paging headers missing: {missing}"]
    problems = _counts_problems(headers, items)
    nxt, prev = headers["x-next-page"], headers["x-prev-page"]
    wanted = {"prev": prev or None, "next": nxt or None, "first": "1"}
    wanted["last"] = headers.get("x-total-pages")
    links = _links(headers.get("link", ""))
    rels = [rel for _, rel in links]
    if rels != [r for r in _RELS if wanted[r] is not None]:
        problems.append(f"Link rels {rels} for next {nxt!r}, prev {prev!r}, last {wanted['last']}")
    for url, rel in links:
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if parts.path != path:
            problems.append(f"the {rel} link is not this listing's URL: {url}")
        if query.get("page") != wanted.get(rel) or query.get("per_page") != headers["x-per-page"]:
            problems.append(f"the {rel} link names page {query.get('page')!r}: {url}")
    return problems


def status_problems(status: int, answer: dict[str, Any]) -> list[str]:
    """What GitLab says, word for word or header by header, for a 401 and a 429."""
    headers: dict[str, str] = answer.get("headers", {})
    if status == 401 and answer.get("json") != _UNAUTHORIZED:
        return [f"a 401 is {_UNAUTHORIZED}, not {answer.get('json') or answer.get('text')!r}"]
    if status != 429:
        return []
    problems = [] if answer["content_type"].startswith("text/plain") else ["a 429 is plain text"]
    if any(h.startswith("ratelimit-") for h in headers):
        bad = [h for h in _RATE_COUNTS if not is_count(headers.get(h))]
        problems += [f"{h} missing or not a count" for h in bad]
        if not problems:
            limit, seen = int(headers["ratelimit-limit"]), int(headers["ratelimit-observed"])
            if int(headers["ratelimit-remaining"]) != max(0, limit - seen):
                problems.append("RateLimit-Remaining is not RateLimit-Limit - RateLimit-Observed")
    if "retry-after" in headers and not is_count(headers["retry-after"]):
        problems.append(f"Retry-After {headers['retry-after']!r} is not a number of seconds")
    return problems


def client_problems(operation: str, asked: dict[str, Any]) -> list[str]:
    """The token in a header GitLab reads, a JSON body said to be JSON, the parameters."""
    problems = [] if asked.get("auth") else ["the client sent no PRIVATE-TOKEN or Bearer token"]
    body = asked.get("json")
    if "text" in asked:
        problems.append("the client sent a body that is not JSON")
    sent_as = asked["headers"].get("content-type", "")
    if body is not None and not sent_as.startswith("application/json"):
        problems.append(f"a JSON body sent as {sent_as!r}")
    return problems + reference().request_errors(operation, asked["query"], body)


def check_exchange(record: dict[str, Any]) -> list[str]:
    """What in one recorded exchange GitLab's docs (or GitLab) disagree with."""
    operation, status = record["operation"], record["status"]
    answer, asked = record["response"], record["request"]
    problems = reference().response_errors(operation, status, answer)
    problems += status_problems(status, answer)
    op = reference().operations.get(operation, {})
    if op.get("paged") and status == 200:
        path = asked.get("path", "")
        problems += paging_problems(path, answer.get("headers", {}), answer.get("json"))
    responses[(operation, status)] += 1
    if asked["headers"].get("user-agent", "").startswith("reviewq"):
        requests[operation] += 1
        problems += client_problems(operation, asked)
    return [f"{operation} -> {status}: {p}" for p in problems]


def _new_records() -> Iterator[dict[str, Any]]:
    for path in sorted(LOG_DIR.glob("gitlab-*.jsonl")):
        with path.open("rb") as log:
            log.seek(_offsets.get(path, 0))
            data = log.read()
        whole = data[: data.rfind(b"\n") + 1]  # a line still being written waits
        _offsets[path] = _offsets.get(path, 0) + len(whole)
        for line in whole.splitlines():
            yield json.loads(line)


@pytest.fixture(autouse=True)
def gitlab_exchanges_match_the_docs() -> Iterator[None]:
    yield
    problems = [p for record in _new_records() for p in check_exchange(record)]
    if problems:
        shown = "\n".join(problems[:20])
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        pytest.fail(f"the fake GitLab or the client left GitLab's API docs:\n{shown}{more}")


class _Summary:
    """The closing count, as a plugin: `conftest.py` already has a summary hook."""

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not responses:
            return
        terminalreporter.write_line(
            f"GitLab exchanges checked against GitLab's API docs: {sum(responses.values())} "
            f"fake responses ({len(responses)} distinct operation and status pairs), "
            f"{sum(requests.values())} client requests ({len(requests)} operations)"
        )


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_Summary(), "gitlab-exchanges-summary")
