"""The fake GitHub as an ASGI app: the REST routes reviewq calls, in GitHub's shapes.

Every API request is screened as GitHub does it: the token first (401), then the rate
limits (injected secondary limits, then the hourly primary window), then the PR (404),
then the route itself. Review creation validates what GitHub validates and answers
422s in GitHub's body shape, so the client's error handling is tested on real text.
`GET /user` names the token's account, or refuses as GitHub does for an App
installation token.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence
from hashlib import sha1
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from scheduler.sandbox.github.control import control_routes
from scheduler.sandbox.github.state import (
    FakeGitHub,
    FakeGitHubConfig,
    FakePull,
    diff_lines,
    user_json,
)
from workers.review.changes import ChangedFile

__all__ = ["MAX_REVIEW_BODY", "SECONDARY_RATE_LIMIT_MESSAGE", "create_github_app"]

T = TypeVar("T")
Handler = Callable[[FakeGitHub, Request, FakePull], Awaitable[Response]]

SECONDARY_RATE_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try "
    "again. If you reach out to GitHub Support for help, please include the request ID "
    "0000:0000:000000:000000:00000000."
)
_PRIMARY_MESSAGE = (
    "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, "
    "please include the request ID 0000:0000:000000:000000:00000000."
)
MAX_REVIEW_BODY = 65_536
_DOCS = "https://docs.github.com/rest"
_REVIEW_DOCS = "https://docs.github.com/rest/pulls/reviews#create-a-review-for-a-pull-request"
_RATE_DOCS = "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api"
_STATES = {"COMMENT": "COMMENTED", "APPROVE": "APPROVED", "REQUEST_CHANGES": "CHANGES_REQUESTED"}
_PR = "/repos/{owner}/{repo}/pulls/{number:int}"
_INTEGRATION = "Resource not accessible by integration"
_USER_DOCS = "https://docs.github.com/rest/users/users#get-the-authenticated-user"


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


def _api(label: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Screen, run and count one API route; `label` is the route as `/_gh/stats` shows it."""

    async def endpoint(request: Request) -> Response:
        gh: FakeGitHub = request.app.state.github
        response = await _screened(gh, request, handler)
        gh.stats[(label, response.status_code)] += 1
        return response

    return endpoint


async def _screened(gh: FakeGitHub, request: Request, handler: Handler) -> Response:
    refused, limits = _gate(gh, request)
    if refused is not None:
        return refused
    params = request.path_params
    pull = gh.pull(params["owner"], params["repo"], params["number"])
    response = _error(404, "Not Found") if pull is None else await handler(gh, request, pull)
    response.headers.update(limits)
    return response


def _gate(gh: FakeGitHub, request: Request) -> tuple[Response | None, dict[str, str]]:
    """The token, then the rate limits: a refusal, or None and the limit headers."""
    if not gh.config.token_matches(request.headers.get("authorization")):
        return _error(401, "Bad credentials"), {}
    now = time.time()
    over, limits = gh.charge(now)
    if gh.take("secondary"):
        retry = gh.faults.retry_after_s
        headers = {**limits, **({} if retry is None else {"retry-after": str(retry)})}
        status = gh.faults.secondary_status
        return _error(status, SECONDARY_RATE_LIMIT_MESSAGE, _RATE_DOCS, headers=headers), limits
    if gh.take("primary"):
        reset = str(int(now) + gh.faults.reset_in_s)
        headers = {**limits, "x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}
        return _error(403, _PRIMARY_MESSAGE, _RATE_DOCS, headers=headers), limits
    if over:
        return _error(403, _PRIMARY_MESSAGE, _RATE_DOCS, headers=limits), limits
    return None, limits


async def get_user(request: Request) -> Response:
    """The token's account, as `GET /user` shows it; an installation token gets the 403
    GitHub answers for one."""
    gh: FakeGitHub = request.app.state.github
    response, limits = _gate(gh, request)
    if response is None and gh.config.installation_token:
        response = _error(403, _INTEGRATION, _USER_DOCS, headers=limits)
    elif response is None:
        response = JSONResponse(user_json(gh.config.bot_login), headers=limits)
    gh.stats[("GET /user", response.status_code)] += 1
    return response


def _int_param(request: Request, name: str, default: int) -> int:
    """GitHub ignores a paging parameter it cannot read rather than refusing the call."""
    try:
        value = int(request.query_params.get(name, default))
    except ValueError:
        return default
    return value if value >= 1 else default


def _page(request: Request, items: Sequence[T], gh: FakeGitHub) -> tuple[list[T], dict[str, str]]:
    """One page and GitHub's `Link` header (prev, next, last, first, as GitHub orders them)."""
    cfg = gh.config
    per_page = min(_int_param(request, "per_page", cfg.default_per_page), cfg.max_per_page)
    page = _int_param(request, "page", 1)
    last = max(1, math.ceil(len(items) / per_page))

    def link(number: int, rel: str) -> str:
        return f'<{request.url.include_query_params(per_page=per_page, page=number)}>; rel="{rel}"'

    links = []
    if page > 1:
        links.append(link(min(page - 1, last), "prev"))
    if page < last:
        links += [link(page + 1, "next"), link(last, "last")]
    if page > 1:
        links.append(link(1, "first"))
    chunk = list(items[(page - 1) * per_page : page * per_page])
    return chunk, ({"link": ", ".join(links)} if links else {})


def _pull_json(pull: FakePull, base: str) -> dict[str, Any]:
    files = pull.files
    return {
        "url": f"{base}/repos/{pull.owner}/{pull.repo}/pulls/{pull.number}",
        "id": int(sha1(f"{pull.owner}/{pull.repo}#{pull.number}".encode()).hexdigest()[:8], 16),
        "number": pull.number,
        "state": pull.state,
        "draft": pull.draft,
        "title": pull.title,
        "user": {"login": "octocat", "id": 1, "type": "User"},
        "head": {"sha": pull.head_sha, "ref": "feature", "label": f"{pull.owner}:feature"},
        "base": {"sha": "0" * 40, "ref": "main", "label": f"{pull.owner}:main"},
        "html_url": f"{base}/{pull.owner}/{pull.repo}/pull/{pull.number}",
        "merged": False,
        "commits": len(pull.files_by_sha),
        "changed_files": len(files),
        "additions": sum(f.additions for f in files),
        "deletions": sum(f.deletions for f in files),
    }


def _file_json(pull: FakePull, f: ChangedFile, base: str) -> dict[str, Any]:
    blob = f"{base}/{pull.owner}/{pull.repo}/blob/{pull.head_sha}/{f.filename}"
    data = f.model_dump(exclude_none=True)
    data["sha"] = sha1(f"{f.filename}\0{f.patch}".encode()).hexdigest()
    data["blob_url"], data["raw_url"] = blob, blob.replace("/blob/", "/raw/", 1)
    data["contents_url"] = f"{base}/repos/{pull.owner}/{pull.repo}/contents/{f.filename}"
    return data


async def get_pull(gh: FakeGitHub, request: Request, pull: FakePull) -> Response:
    return JSONResponse(_pull_json(pull, _base(request)))


async def list_files(gh: FakeGitHub, request: Request, pull: FakePull) -> Response:
    """Only the first `files_cap` files are ever listed, as GitHub stops at 3,000."""
    chunk, headers = _page(request, pull.files[: gh.config.files_cap], gh)
    base = _base(request)
    return JSONResponse([_file_json(pull, f, base) for f in chunk], headers=headers)


async def list_reviews(gh: FakeGitHub, request: Request, pull: FakePull) -> Response:
    key = (pull.owner, pull.repo, pull.number)
    mine = [r for r in gh.reviews if (r.owner, r.repo, r.number) == key]
    chunk, headers = _page(request, mine, gh)
    base = _base(request)
    return JSONResponse([r.as_json(base) for r in chunk], headers=headers)


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
    problem = _review_problem(pull, data)
    if problem is not None:
        return _error(422, "Unprocessable Entity", _REVIEW_DOCS, errors=[problem])
    event = data.get("event")
    comments = [
        {"path": c["path"], "line": c["line"], "side": c.get("side", "RIGHT"), "body": c["body"]}
        for c in data.get("comments") or []
    ]
    state = _STATES[event] if event else "PENDING"
    commit = data.get("commit_id") or pull.head_sha
    review = gh.add_review(pull, commit, data.get("body") or "", state, comments)
    if gh.take("after_create"):
        return JSONResponse({"message": "Server Error"}, 502)
    return JSONResponse(review.as_json(_base(request)))


def _review_problem(pull: FakePull, data: dict[str, Any]) -> str | None:
    """GitHub's first complaint about a review, in its words, or None if it is fine."""
    commit = data.get("commit_id") or pull.head_sha
    if not isinstance(commit, str) or commit not in pull.files_by_sha:
        return f"No commit found for SHA: {commit}"
    event, body, comments = data.get("event"), data.get("body") or "", data.get("comments") or []
    if event is not None and event not in _STATES:
        return f"Event {event!r} is not one of APPROVE, REQUEST_CHANGES, COMMENT"
    if not isinstance(body, str):
        return "Body must be a string"
    if len(body) > MAX_REVIEW_BODY:
        return f"Body is too long (maximum is {MAX_REVIEW_BODY} characters)"
    if not isinstance(comments, list):
        return "Comments is not an array"
    if event in ("COMMENT", "REQUEST_CHANGES") and not body and not comments:
        return "Body is required for this event"
    files = {f.filename: f for f in pull.files_by_sha[commit]}
    for comment in comments:
        problem = _comment_problem(comment, files)
        if problem is not None:
            return problem
    return None


def _comment_problem(comment: object, files: dict[str, ChangedFile]) -> str | None:
    if not isinstance(comment, dict) or not isinstance(comment.get("body"), str):
        return "Body can't be blank"
    path = comment.get("path")
    changed = files.get(path) if isinstance(path, str) else None
    if changed is None:
        return "Path could not be resolved"
    line, side = comment.get("line"), comment.get("side", "RIGHT")
    if side not in ("LEFT", "RIGHT"):
        return "Side must be LEFT or RIGHT"
    if not isinstance(line, int) or isinstance(line, bool) or changed.patch is None:
        return "Line could not be resolved"
    left, right = diff_lines(changed.patch)
    if line not in (right if side == "RIGHT" else left):
        return "Line could not be resolved"
    return None


def _api_routes() -> list[BaseRoute]:
    table: list[tuple[str, str, Handler]] = [
        ("GET", _PR, get_pull),
        ("GET", _PR + "/files", list_files),
        ("GET", _PR + "/reviews", list_reviews),
        ("POST", _PR + "/reviews", create_review),
    ]
    label = "/repos/{owner}/{repo}/pulls/{number}"
    return [
        Route("/user", get_user, methods=["GET"]),
        *(
            Route(path, _api(f"{method} {path.replace(_PR, label)}", handler), methods=[method])
            for method, path, handler in table
        ),
    ]


def create_github_app(config: FakeGitHubConfig | None = None) -> Starlette:
    """A fresh fake GitHub with no PRs; `app.state.github` is its state, for in-process checks."""
    app = Starlette(routes=_api_routes() + control_routes())
    app.state.github = FakeGitHub(config or FakeGitHubConfig())
    return app
