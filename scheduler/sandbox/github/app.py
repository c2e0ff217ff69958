"""The fake GitHub as an ASGI app: the REST routes reviewq calls, in GitHub's shapes.

Every API request is screened as GitHub does it: the headers (`checks.py`), the token
(401), then the rate limits (injected secondary limits, then the hourly primary
window), then the PR (404), then the route itself. Objects are GitHub's own example
responses overlaid with the fake's state (`shapes.py`); paging links name the
repository by id, as GitHub's do, and those URLs are served too. Review creation
validates what GitHub validates and answers 422s in GitHub's body shape, so the
client's error handling is tested on real text. Each exchange can be recorded for a
check against GitHub's OpenAPI description (`exchanges.py`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from scheduler.sandbox.github.checks import (
    MAX_REVIEW_BODY,
    STATES,
    header_problem,
    review_problem,
)
from scheduler.sandbox.github.control import control_routes
from scheduler.sandbox.github.exchanges import ExchangeLog
from scheduler.sandbox.github.shapes import (
    compare_json,
    content_json,
    file_json,
    pull_json,
    review_json,
    viewer_json,
)
from scheduler.sandbox.github.state import FakeGitHub, FakeGitHubConfig, FakePull, repo_id

__all__ = ["MAX_REVIEW_BODY", "SECONDARY_RATE_LIMIT_MESSAGE", "create_github_app"]

T = TypeVar("T")
Handler = Callable[[FakeGitHub, Request, FakePull], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]

SECONDARY_RATE_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
    "again. If you reach out to GitHub Support for help, please include the request ID "
    "0000:0000:000000:000000:00000000."
)
# GitHub's wording before "secondary rate limit", still met: no "rate limit" in it.
ABUSE_MESSAGE = (
    "You have triggered an abuse detection mechanism. Please wait a few minutes before "
    "you try again."
)
_PRIMARY_MESSAGE = (
    "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, "
    "please include the request ID 0000:0000:000000:000000:00000000."
)
_DOCS = "https://docs.github.com/rest"
_REVIEW_DOCS = "https://docs.github.com/rest/pulls/reviews#create-a-review-for-a-pull-request"
_RATE_DOCS = "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api"
_VERSION_DOCS = "https://docs.github.com/rest/about-the-rest-api/api-versions"
_PR = "/pulls/{number:int}"
_BY_NAME = "/repos/{owner}/{repo}"
_BY_ID = "/repositories/{repo_id:int}"
_INTEGRATION = "Resource not accessible by integration"
_USER_DOCS = "https://docs.github.com/rest/users/users#get-the-authenticated-user"
_COMPARE_DOCS = "https://docs.github.com/rest/commits/commits#compare-two-commits"
_CONTENTS_DOCS = "https://docs.github.com/rest/repos/contents#get-repository-content"


def _error(
    status: int,
    message: str,
    docs: str = _DOCS,
    *,
    errors: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"message": message, "documentation_url": docs, "status": str(status)}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status, headers)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _recorded(label: str, operation: str, endpoint: Endpoint) -> Endpoint:
    """Count the request under `label` (as `/_gh/stats` shows it) and record the
    exchange under GitHub's `operation` path, when the fake keeps a log."""

    async def run(request: Request) -> Response:
        gh: FakeGitHub = request.app.state.github
        response = await endpoint(request)
        gh.stats[(label, response.status_code)] += 1
        if gh.exchanges is not None:
            _record(gh.exchanges, operation, request, response, await request.body())
        return response

    return run


def _record(
    log: ExchangeLog, operation: str, request: Request, response: Response, sent: bytes
) -> None:
    def parsed(raw: bytes) -> dict[str, Any]:
        try:
            return {"json": json.loads(raw)} if raw else {}
        except ValueError:
            return {"text": raw.decode("utf-8", "replace")[:2000]}

    log.write(
        operation=operation,
        method=request.method,
        status=response.status_code,
        request={
            "headers": ExchangeLog.request_headers(request.headers),
            "query": dict(request.query_params),
            **parsed(sent),
        },
        response={
            "content_type": response.headers.get("content-type", ""),
            "link": response.headers.get("link"),
            **parsed(bytes(response.body)),
        },
    )


def _on_pull(handler: Handler) -> Endpoint:
    """Screen the request, find the PR (by owner and name, or by repository id)."""

    async def endpoint(request: Request) -> Response:
        gh: FakeGitHub = request.app.state.github
        refused, limits = _gate(gh, request)
        if refused is not None:
            return refused
        params = request.path_params
        named = gh.repo_by_id(params["repo_id"]) if "repo_id" in params else None
        owner, repo = named or (params.get("owner", ""), params.get("repo", ""))
        pull = gh.pull(owner, repo, params["number"])
        response = _error(404, "Not Found") if pull is None else await handler(gh, request, pull)
        response.headers.update(limits)
        return response

    return endpoint


def _gate(gh: FakeGitHub, request: Request) -> tuple[Response | None, dict[str, str]]:
    """The headers, the token, then the rate limits: a refusal, or None and the
    limit headers."""
    problem = header_problem(request.headers)
    if problem is not None:
        status, message = problem
        if status == 403:  # GitHub's front end answers this one in plain text
            return PlainTextResponse(message, status), {}
        return _error(status, message, _VERSION_DOCS if status == 400 else _DOCS), {}
    if not gh.config.token_matches(request.headers.get("authorization")):
        return _error(401, "Bad credentials"), {}
    now = time.time()
    over, limits = gh.charge(now)
    if gh.take("secondary"):
        retry = gh.faults.retry_after_s
        headers = {**limits, **({} if retry is None else {"retry-after": str(retry)})}
        abuse = gh.faults.secondary_wording == "abuse"
        message = ABUSE_MESSAGE if abuse else SECONDARY_RATE_LIMIT_MESSAGE
        return _error(gh.faults.secondary_status, message, _RATE_DOCS, headers=headers), limits
    status = gh.faults.primary_status
    if gh.take("primary"):
        reset = str(int(now) + gh.faults.reset_in_s)
        headers = {**limits, "x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}
        return _error(status, _PRIMARY_MESSAGE, _RATE_DOCS, headers=headers), limits
    if over:
        return _error(status, _PRIMARY_MESSAGE, _RATE_DOCS, headers=limits), limits
    return None, limits


async def get_user(request: Request) -> Response:
    """The token's account, as `GET /user` shows it; an installation token gets the 403
    GitHub answers for one."""
    gh: FakeGitHub = request.app.state.github
    response, limits = _gate(gh, request)
    if response is None and gh.config.installation_token:
        response = _error(403, _INTEGRATION, _USER_DOCS, headers=limits)
    elif response is None:
        response = JSONResponse(viewer_json(gh.config.bot_login, _base(request)), headers=limits)
    return response


def _int_param(request: Request, name: str, default: int) -> int:
    """GitHub ignores a paging parameter it cannot read rather than refusing the call."""
    try:
        value = int(request.query_params.get(name, default))
    except ValueError:
        return default
    return value if value >= 1 else default


def _page(
    request: Request, items: Sequence[T], gh: FakeGitHub, pull: FakePull, listing: str
) -> tuple[list[T], dict[str, str]]:
    """One page and GitHub's `Link` header (prev, next, last, first, as GitHub orders
    them), whose URLs name the repository by id, as GitHub's do."""
    cfg = gh.config
    per_page = min(_int_param(request, "per_page", cfg.default_per_page), cfg.max_per_page)
    page = _int_param(request, "page", 1)
    last = max(1, math.ceil(len(items) / per_page))
    url = f"{_base(request)}/repositories/{repo_id(pull.owner, pull.repo)}/pulls/{pull.number}"

    def link(number: int, rel: str) -> str:
        return f'<{url}/{listing}?per_page={per_page}&page={number}>; rel="{rel}"'

    links = []
    if page > 1:
        links.append(link(min(page - 1, last), "prev"))
    if page < last:
        links += [link(page + 1, "next"), link(last, "last")]
    if page > 1:
        links.append(link(1, "first"))
    chunk = list(items[(page - 1) * per_page : page * per_page])
    return chunk, ({"link": ", ".join(links)} if links else {})


async def get_pull(gh: FakeGitHub, request: Request, pull: FakePull) -> Response:
    return JSONResponse(pull_json(pull, _base(request)))


async def list_files(gh: FakeGitHub, request: Request, pull: FakePull) -> Response:
    """Only the first `files_cap` files are ever listed, as GitHub stops at 3,000."""
    chunk, headers = _page(request, pull.files[: gh.config.files_cap], gh, pull, "files")
    base, cap = _base(request), gh.config.max_patch_chars
    return JSONResponse([file_json(pull, f, base, cap) for f in chunk], headers=headers)


async def list_reviews(gh: FakeGitHub, request: Request, pull: FakePull) -> Response:
    key = (pull.owner, pull.repo, pull.number)
    mine = [r for r in gh.reviews if (r.owner, r.repo, r.number) == key]
    chunk, headers = _page(request, mine, gh, pull, "reviews")
    base = _base(request)
    return JSONResponse([review_json(r, base) for r in chunk], headers=headers)


async def create_review(gh: FakeGitHub, request: Request, pull: FakePull) -> Response:
    """`review_5xx` fails before anything is stored; `review_5xx_after_create` after."""
    try:
        data = await request.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return _error(400, "Problems parsing JSON", _REVIEW_DOCS)
    if gh.take("review_5xx"):
        return JSONResponse({"message": "Server Error"}, 502)
    pending = gh.pending_review_of(pull, gh.config.bot_login) is not None
    problem = review_problem(pull, data, pending)
    if problem is not None:
        return _error(422, "Unprocessable Entity", _REVIEW_DOCS, errors=[problem])
    event = data.get("event")
    comments = [_stored_comment(c) for c in data.get("comments") or []]
    state = STATES[event] if event else "PENDING"
    commit = data.get("commit_id") or pull.head_sha
    review = gh.add_review(pull, commit, data.get("body") or "", state, comments)
    if gh.take("after_create"):
        return JSONResponse({"message": "Server Error"}, 502)
    return JSONResponse(review_json(review, _base(request)))


def _stored_comment(comment: dict[str, Any]) -> dict[str, Any]:
    """As `/_gh/reviews` shows it: where it is anchored, and its text."""
    if comment.get("line") is None:
        return {"path": comment["path"], "position": comment["position"], "body": comment["body"]}
    kept = ("path", "start_line", "start_side", "line", "side", "body")
    stored = {k: comment[k] for k in kept if comment.get(k) is not None}
    return {**stored, "side": comment.get("side", "RIGHT")}


def _on_repo(handler: Callable[[FakeGitHub, Request, tuple[str, str]], Response]) -> Endpoint:
    """Screen the request, find the repository (one the fake holds a PR of)."""

    async def endpoint(request: Request) -> Response:
        gh: FakeGitHub = request.app.state.github
        refused, limits = _gate(gh, request)
        if refused is not None:
            return refused
        repo = (request.path_params["owner"], request.path_params["repo"])
        known = repo in gh.history.commits
        response = handler(gh, request, repo) if known else _error(404, "Not Found")
        response.headers.update(limits)
        return response

    return endpoint


def compare(gh: FakeGitHub, request: Request, repo: tuple[str, str]) -> Response:
    """`base...head`; a commit the fake does not know (or `compare_gone`) is GitHub's 404."""
    basehead = request.path_params["basehead"]
    old, sep, new = basehead.partition("...")
    found = gh.history.compare(repo, old, new) if sep else None
    if found is None or gh.take("compare_gone"):
        return _error(404, f"No commit found for SHA: {new if found else old}", _COMPARE_DOCS)
    head = gh.history.get(repo, new)
    assert head is not None
    base, cap = _base(request), gh.config.max_patch_chars
    return JSONResponse(compare_json(repo, found, basehead, head.sha, base, cap))


def get_content(gh: FakeGitHub, request: Request, repo: tuple[str, str]) -> Response:
    """A file the test put in the head's `contents`, at `?ref=` (default: the newest
    head pushed); anything else is GitHub's 404."""
    if gh.take("contents_5xx"):
        return JSONResponse({"message": "Server Error"}, 502)
    commits = gh.history.commits[repo]
    ref = request.query_params.get("ref") or next(reversed(commits))
    commit = gh.history.get(repo, ref)
    path = request.path_params["path"]
    text = None if commit is None else commit.contents.get(path)
    if text is None:
        return _error(404, "Not Found", _CONTENTS_DOCS)
    return JSONResponse(content_json(repo, path, ref, text, _base(request)))


def _api_routes() -> list[BaseRoute]:
    table: list[tuple[str, str, Handler]] = [
        ("GET", "", get_pull),
        ("GET", "/files", list_files),
        ("GET", "/reviews", list_reviews),
        ("POST", "/reviews", create_review),
    ]
    routes: list[BaseRoute] = [
        Route("/user", _recorded("GET /user", "/user", get_user), methods=["GET"])
    ]
    for tail, template, on_repo in (
        ("/compare/{basehead}", "/compare/{basehead}", compare),
        ("/contents/{path:path}", "/contents/{path}", get_content),
    ):
        label = f"GET /repos/{{owner}}/{{repo}}{template}"
        operation = f"/repos/{{owner}}/{{repo}}{template}"
        endpoint = _recorded(label, operation, _on_repo(on_repo))
        routes.append(Route(_BY_NAME + tail, endpoint, methods=["GET"]))
    for method, tail, handler in table:
        label = f"{method} /repos/{{owner}}/{{repo}}/pulls/{{number}}{tail}"
        operation = f"/repos/{{owner}}/{{repo}}/pulls/{{pull_number}}{tail}"
        endpoint = _recorded(label, operation, _on_pull(handler))
        routes += [
            Route(prefix + _PR + tail, endpoint, methods=[method]) for prefix in (_BY_NAME, _BY_ID)
        ]
    return routes


def create_github_app(config: FakeGitHubConfig | None = None) -> Starlette:
    """A fresh fake GitHub with no PRs; `app.state.github` is its state, for in-process checks."""
    app = Starlette(routes=_api_routes() + control_routes())
    app.state.github = FakeGitHub(config or FakeGitHubConfig())
    return app
