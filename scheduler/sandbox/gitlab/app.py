"""The fake GitLab as an ASGI app: the REST routes reviewq calls, in GitLab's shapes.

GitLab names a project by its full path URL-encoded as one segment
(`/projects/group%2Fsub%2Fproject/...`), and so does a file path; the router reads the
raw request path and splits it at the unencoded slashes, as GitLab does, so a client
that forgets to encode gets GitLab's 404. Every API request is screened in GitLab's
order: the token (401), injected faults (429 with `Retry-After` or only
`RateLimit-Reset`, a 502, a slow answer), then the project and merge request (404),
then the route. A discussion's position is checked as GitLab checks it, and a bad one
gets GitLab's own 400 words.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from scheduler.sandbox.gitlab import shapes
from scheduler.sandbox.gitlab.compare import compare_json
from scheduler.sandbox.gitlab.control import control_routes
from scheduler.sandbox.gitlab.exchanges import ExchangeLog, record_exchange
from scheduler.sandbox.gitlab.paging import page
from scheduler.sandbox.gitlab.state import FakeGitLab, FakeGitLabConfig, FakeMr

__all__ = ["LINE_CODE_MESSAGE", "create_gitlab_app"]

T = TypeVar("T")
Handler = Callable[[FakeGitLab, Request, FakeMr], Awaitable[Response]]

LINE_CODE_MESSAGE = (
    '400 Bad request - Note {:line_code=>["can\'t be blank", "must be a valid line code"]}'
)
_MR_ROUTES = ("", "versions", "diffs", "discussions", "notes")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"message": message}, status, headers)


def _segments(request: Request) -> list[str]:
    """The path split at its unencoded slashes, each segment then decoded."""
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    path = raw.split(b"?", 1)[0].decode("latin-1")
    return [unquote(part) for part in path.strip("/").split("/")]


async def api(request: Request) -> Response:
    """Every `/api/v4/*` request: screened, routed, counted under its route template."""
    gl: FakeGitLab = request.app.state.gitlab
    parts = _segments(request)[2:]  # after api/v4
    label, response = await _route(gl, request, parts)
    gl.stats[(f"{request.method} {label}", response.status_code)] += 1
    await record_exchange(request, f"{request.method} {label}", response)
    return response


async def _route(gl: FakeGitLab, request: Request, parts: list[str]) -> tuple[str, Response]:
    refused = await _gate(gl, request)
    if parts == ["user"] and request.method == "GET":
        return "/user", refused or _user(gl, request)
    if len(parts) == 6 and parts[:1] == ["projects"] and parts[2:4] == ["repository", "files"]:
        label = "/projects/:id/repository/files/:file_path/raw"
        if parts[5] != "raw" or request.method != "GET":
            return label, _error(404, "404 Not Found")
        return label, refused or _raw_file(gl, request, parts[1], parts[4])
    if len(parts) == 4 and parts[0] == "projects" and parts[2:] == ["repository", "compare"]:
        label = "/projects/:id/repository/compare"
        if request.method != "GET":
            return label, _error(404, "404 Not Found")
        return label, refused or _compare(gl, request, parts[1])
    if len(parts) == 6 and parts[0] == "projects" and parts[2::2] == ["merge_requests", "versions"]:
        label = "/projects/:id/merge_requests/:iid/versions/:version_id"
        if request.method != "GET":
            return label, _error(404, "404 Not Found")
        tail = "versions/:version_id"
        return label, refused or await _mr_route(gl, request, parts[1], parts[3], tail)
    if len(parts) in (4, 5) and parts[0] == "projects" and parts[2] == "merge_requests":
        tail = parts[4] if len(parts) == 5 else ""
        label = "/projects/:id/merge_requests/:iid" + (f"/{tail}" if tail else "")
        if tail not in _MR_ROUTES:
            return label, _error(404, "404 Not Found")
        if refused is not None:
            return label, refused
        return label, await _mr_route(gl, request, parts[1], parts[3], tail)
    return "other", _error(404, "404 Not Found")


async def _gate(gl: FakeGitLab, request: Request) -> Response | None:
    """The token, then the injected faults: a refusal, or None to go on."""
    headers = request.headers
    if not gl.config.token_matches(headers.get("private-token"), headers.get("authorization")):
        return _error(401, "401 Unauthorized")
    if gl.take("rate_limit"):
        return _rate_limited(gl)
    if gl.take("server_error"):
        return PlainTextResponse("GitLab is not responding", 502)
    if gl.take("slow"):
        await asyncio.sleep(gl.faults.slow_s)
    return None


def _rate_limited(gl: FakeGitLab) -> Response:
    """GitLab's Rack::Attack answer: plain text, `RateLimit-*`, and `Retry-After`
    unless the fault leaves it out."""
    reset = int(time.time()) + gl.faults.reset_in_s
    headers = {
        "RateLimit-Name": "throttle_authenticated_api",
        "RateLimit-Limit": "2000",
        "RateLimit-Observed": "2001",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": str(reset),
        "RateLimit-ResetTime": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(reset)),
    }
    if gl.faults.retry_after_s is not None:
        headers["Retry-After"] = str(gl.faults.retry_after_s)
    return PlainTextResponse("Retry later\n", 429, headers=headers)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _user(gl: FakeGitLab, request: Request) -> Response:
    return JSONResponse(shapes.current_user_json(gl.config.bot_username, _base(request)))


def _raw_file(gl: FakeGitLab, request: Request, project: str, path: str) -> Response:
    if not gl.project_known(project):
        return _error(404, "404 Project Not Found")
    content = gl.content(project, path, request.query_params.get("ref", ""))
    if content is None:
        return _error(404, "404 File Not Found")
    return PlainTextResponse(content)


def _compare(gl: FakeGitLab, request: Request, project: str) -> Response:
    if not gl.project_known(project):
        return _error(404, "404 Project Not Found")
    query = request.query_params
    straight = query.get("straight", "false").lower() == "true"
    args = (gl, project, _base(request), query.get("from", ""), query.get("to", ""))
    found = compare_json(*args, straight=straight)
    return _error(404, "404 Not found") if found is None else JSONResponse(found)


async def _mr_route(
    gl: FakeGitLab, request: Request, project: str, iid_text: str, tail: str
) -> Response:
    if not gl.project_known(project):
        return _error(404, "404 Project Not Found")
    mr = gl.mrs.get((project, int(iid_text))) if iid_text.isdigit() else None
    if mr is None:
        return _error(404, "404 Not found")
    handlers: dict[tuple[str, str], Handler] = {
        ("GET", ""): get_mr,
        ("GET", "versions"): list_versions,
        ("GET", "versions/:version_id"): get_version,
        ("GET", "diffs"): list_diffs,
        ("GET", "discussions"): list_discussions,
        ("POST", "discussions"): create_discussion,
        ("GET", "notes"): list_notes,
        ("POST", "notes"): create_note,
    }
    handler = handlers.get((request.method, tail))
    if handler is None:
        return _error(405, "405 Method Not Allowed")
    return await handler(gl, request, mr)


def _page(request: Request, items: Sequence[T], gl: FakeGitLab) -> tuple[list[T], dict[str, str]]:
    """One page, with GitLab's `x-*` paging headers and its `Link` header."""
    cfg = gl.config
    return page(
        request, items, default_per_page=cfg.default_per_page, max_per_page=cfg.max_per_page
    )


async def get_mr(gl: FakeGitLab, request: Request, mr: FakeMr) -> Response:
    threads = gl.discussions.get((mr.project, mr.iid), [])
    user_notes = sum(not n.system for d in threads for n in d.notes)
    diverged = request.query_params.get("include_diverged_commits_count") == "true"
    data = shapes.merge_request_json(mr, _base(request), user_notes=user_notes, diverged=diverged)
    return JSONResponse(data)


async def list_versions(gl: FakeGitLab, request: Request, mr: FakeMr) -> Response:
    chunk, headers = _page(request, list(reversed(mr.versions)), gl)
    return JSONResponse([shapes.version_json(mr, v) for v in chunk], headers=headers)


async def get_version(gl: FakeGitLab, request: Request, mr: FakeMr) -> Response:
    """One version with its commits and its diffs, which GitLab does not collapse here."""
    wanted = _segments(request)[-1]
    version = next((v for v in mr.versions if str(v.id) == wanted), None)
    if version is None:
        return _error(404, "404 Not found")
    limit = gl.config.too_large_chars
    data = shapes.version_detail_json(mr, version, _base(request), too_large_chars=limit)
    return JSONResponse(data)


async def list_diffs(gl: FakeGitLab, request: Request, mr: FakeMr) -> Response:
    chunk, headers = _page(request, mr.latest.files, gl)
    limits = {"collapse_chars": gl.config.collapse_chars}
    limits["too_large_chars"] = gl.config.too_large_chars
    return JSONResponse([shapes.diff_json(f, **limits) for f in chunk], headers=headers)


async def list_discussions(gl: FakeGitLab, request: Request, mr: FakeMr) -> Response:
    threads = gl.discussions.get((mr.project, mr.iid), [])
    chunk, headers = _page(request, threads, gl)
    base = _base(request)
    return JSONResponse([shapes.discussion_json(d, mr, base) for d in chunk], headers=headers)


async def list_notes(gl: FakeGitLab, request: Request, mr: FakeMr) -> Response:
    """Newest first, as GitLab sorts notes by default."""
    threads = gl.discussions.get((mr.project, mr.iid), [])
    chunk, headers = _page(request, shapes.notes_newest_first(threads), gl)
    base = _base(request)
    return JSONResponse([shapes.note_json(n, d, mr, base) for n, d in chunk], headers=headers)


async def _body(request: Request) -> dict[str, Any] | Response:
    try:
        data = await request.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return _error(400, "400 Bad request - the body is not a JSON object")
    if not isinstance(data.get("body"), str) or not data["body"].strip():
        return JSONResponse({"error": "body is missing"}, 400)
    return data


async def create_discussion(gl: FakeGitLab, request: Request, mr: FakeMr) -> Response:
    data = await _body(request)
    if isinstance(data, Response):
        return data
    position = data.get("position")
    if position is not None:
        problem = gl.position_problem(mr, position)
        if problem is not None:
            message = (
                LINE_CODE_MESSAGE if problem == "line_code" else f"400 Bad request - {problem}"
            )
            return _error(400, message)
    author = gl.config.bot_username
    discussion = gl.add_note(mr, data["body"], author, position=position)
    discussion.individual_note = False  # a thread, even without a position
    if gl.take("after_create"):
        return PlainTextResponse("GitLab is not responding", 502)
    return JSONResponse(shapes.discussion_json(discussion, mr, _base(request)), 201)


async def create_note(gl: FakeGitLab, request: Request, mr: FakeMr) -> Response:
    data = await _body(request)
    if isinstance(data, Response):
        return data
    discussion = gl.add_note(mr, data["body"], gl.config.bot_username)
    if gl.take("note_after_create") or gl.take("after_create"):
        return PlainTextResponse("GitLab is not responding", 502)
    note = shapes.note_json(discussion.notes[0], discussion, mr, _base(request))
    return JSONResponse(note, 201)


def create_gitlab_app(config: FakeGitLabConfig | None = None) -> Starlette:
    """A fresh fake GitLab with no MRs; `app.state.gitlab` is its state."""
    routes = [Route("/api/v4/{rest:path}", api, methods=["GET", "POST"]), *control_routes()]
    app = Starlette(routes=routes)
    app.state.gitlab = FakeGitLab(config or FakeGitLabConfig())
    app.state.gitlab_exchanges = ExchangeLog.open(app.state.gitlab.config.exchange_log)
    return app
