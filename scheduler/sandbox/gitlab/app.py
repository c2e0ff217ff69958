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
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from scheduler.sandbox.gitlab.control import control_routes
from scheduler.sandbox.gitlab.state import FakeGitLab, FakeGitLabConfig, FakeMr, MrFile

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
    return response


async def _route(gl: FakeGitLab, request: Request, parts: list[str]) -> tuple[str, Response]:
    refused = await _gate(gl, request)
    if parts == ["user"] and request.method == "GET":
        return "/user", refused or _user(gl)
    if len(parts) == 6 and parts[:1] == ["projects"] and parts[2:4] == ["repository", "files"]:
        label = "/projects/:id/repository/files/:file_path/raw"
        if parts[5] != "raw" or request.method != "GET":
            return label, _error(404, "404 Not Found")
        return label, refused or _raw_file(gl, request, parts[1], parts[4])
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


def _user(gl: FakeGitLab) -> Response:
    name = gl.config.bot_username
    return JSONResponse({"id": 7, "username": name, "name": name, "state": "active", "bot": True})


def _raw_file(gl: FakeGitLab, request: Request, project: str, path: str) -> Response:
    if not gl.project_known(project):
        return _error(404, "404 Project Not Found")
    content = gl.content(project, path, request.query_params.get("ref", ""))
    if content is None:
        return _error(404, "404 File Not Found")
    return PlainTextResponse(content)


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


def _int_param(request: Request, name: str, default: int) -> int:
    try:
        value = int(request.query_params.get(name, default))
    except ValueError:
        return default
    return value if value >= 1 else default


def _page(request: Request, items: Sequence[T], gl: FakeGitLab) -> tuple[list[T], dict[str, str]]:
    """One page, with GitLab's `X-*` paging headers and its `Link` header."""
    per_page = min(_int_param(request, "per_page", gl.config.default_per_page), 100)
    page = _int_param(request, "page", 1)
    last = max(1, math.ceil(len(items) / per_page))
    headers = {
        "X-Page": str(page),
        "X-Per-Page": str(per_page),
        "X-Total": str(len(items)),
        "X-Total-Pages": str(last),
        "X-Next-Page": str(page + 1) if page < last else "",
        "X-Prev-Page": str(page - 1) if page > 1 else "",
    }
    links = [f'<{request.url.include_query_params(page=1, per_page=per_page)}>; rel="first"']
    if page < last:
        nxt = request.url.include_query_params(page=page + 1, per_page=per_page)
        links.insert(0, f'<{nxt}>; rel="next"')
    headers["Link"] = ", ".join(links)
    return list(items[(page - 1) * per_page : page * per_page]), headers


def _mr_json(mr: FakeMr, base: str) -> dict[str, Any]:
    head = mr.latest
    refs = {"base_sha": head.base_sha, "head_sha": head.head_sha, "start_sha": head.base_sha}
    return {
        "id": mr.project_id * 1000 + mr.iid,
        "iid": mr.iid,
        "project_id": mr.project_id,
        "title": mr.title,
        "state": mr.state,
        "draft": mr.draft,
        "work_in_progress": mr.draft,
        "sha": head.head_sha,
        "diff_refs": refs,
        "source_project_id": mr.project_id,
        "target_project_id": mr.project_id,
        "web_url": f"{base}/{mr.project}/-/merge_requests/{mr.iid}",
        "author": {"id": 1, "username": "author", "name": "Author"},
    }


async def get_mr(gl: FakeGitLab, request: Request, mr: FakeMr) -> Response:
    return JSONResponse(_mr_json(mr, str(request.base_url).rstrip("/")))


async def list_versions(gl: FakeGitLab, request: Request, mr: FakeMr) -> Response:
    newest_first = [
        {
            "id": v.id,
            "head_commit_sha": v.head_sha,
            "base_commit_sha": v.base_sha,
            "start_commit_sha": v.base_sha,
            "created_at": v.created_at,
            "merge_request_id": mr.project_id * 1000 + mr.iid,
            "state": "collected",
            "real_size": str(len(v.files)),
        }
        for v in reversed(mr.versions)
    ]
    chunk, headers = _page(request, newest_first, gl)
    return JSONResponse(chunk, headers=headers)


def _diff_json(f: MrFile, gl: FakeGitLab) -> dict[str, Any]:
    too_large = len(f.diff) > gl.config.too_large_chars
    collapsed = too_large or len(f.diff) > gl.config.collapse_chars
    return {
        "old_path": f.old_path,
        "new_path": f.new_path,
        "a_mode": "0" if f.new_file else "100644",
        "b_mode": "0" if f.deleted_file else "100644",
        "diff": "" if collapsed else f.diff,
        "new_file": f.new_file,
        "renamed_file": f.renamed_file,
        "deleted_file": f.deleted_file,
        "generated_file": f.generated_file,
        "collapsed": collapsed,
        "too_large": too_large,
    }


async def list_diffs(gl: FakeGitLab, request: Request, mr: FakeMr) -> Response:
    chunk, headers = _page(request, mr.latest.files, gl)
    return JSONResponse([_diff_json(f, gl) for f in chunk], headers=headers)


async def list_discussions(gl: FakeGitLab, request: Request, mr: FakeMr) -> Response:
    threads = gl.discussions.get((mr.project, mr.iid), [])
    chunk, headers = _page(request, threads, gl)
    return JSONResponse([d.as_json(mr) for d in chunk], headers=headers)


async def list_notes(gl: FakeGitLab, request: Request, mr: FakeMr) -> Response:
    """Newest first, as GitLab sorts notes by default."""
    threads = gl.discussions.get((mr.project, mr.iid), [])
    notes = sorted((n for d in threads for n in d.notes), key=lambda n: -n.id)
    chunk, headers = _page(request, notes, gl)
    return JSONResponse([n.as_json(mr) for n in chunk], headers=headers)


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
    if gl.take("after_create"):
        return PlainTextResponse("GitLab is not responding", 502)
    return JSONResponse(discussion.as_json(mr), 201)


async def create_note(gl: FakeGitLab, request: Request, mr: FakeMr) -> Response:
    data = await _body(request)
    if isinstance(data, Response):
        return data
    discussion = gl.add_note(mr, data["body"], gl.config.bot_username)
    if gl.take("note_after_create") or gl.take("after_create"):
        return PlainTextResponse("GitLab is not responding", 502)
    return JSONResponse(discussion.notes[0].as_json(mr), 201)


def create_gitlab_app(config: FakeGitLabConfig | None = None) -> Starlette:
    """A fresh fake GitLab with no MRs; `app.state.gitlab` is its state."""
    routes = [Route("/api/v4/{rest:path}", api, methods=["GET", "POST"]), *control_routes()]
    app = Starlette(routes=routes)
    app.state.gitlab = FakeGitLab(config or FakeGitLabConfig())
    return app
