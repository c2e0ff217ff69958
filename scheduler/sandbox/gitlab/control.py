"""`/_gl/*`: the side door tests, the demo and the chaos suite drive the fake with.

These routes take no token, so they answer only requests that arrive over loopback
(both ends of the connection), unless the config's `remote_control` says otherwise.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from scheduler.sandbox.gitlab.state import FakeGitLab, FaultsUpdate, MrSpec, NoteSpec
from scheduler.sandbox.server import is_loopback

__all__ = ["control_routes"]

M = TypeVar("M", bound=BaseModel)
Endpoint = Callable[[Request], Awaitable[Response]]


def _gl(request: Request) -> FakeGitLab:
    gl: FakeGitLab = request.app.state.gitlab
    return gl


def _local_only(endpoint: Endpoint) -> Endpoint:
    async def guarded(request: Request) -> Response:
        client, server = request.scope.get("client"), request.scope.get("server")
        local = bool(client and server and is_loopback(client[0]) and is_loopback(server[0]))
        if not local and not _gl(request).config.remote_control:
            return JSONResponse({"error": "control routes answer only over loopback"}, 403)
        return await endpoint(request)

    return guarded


async def _parsed(request: Request, model: type[M]) -> M | Response:
    try:
        data = await request.json()
    except ValueError:
        return JSONResponse({"error": "the body is not valid JSON"}, 400)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return JSONResponse({"error": str(exc)}, 400)


async def upsert_mr(request: Request) -> Response:
    """Create an MR, or give it a new head (a new diff version); older ones stay."""
    spec = await _parsed(request, MrSpec)
    if isinstance(spec, Response):
        return spec
    mr = _gl(request).upsert(spec)
    body = {
        "project": mr.project,
        "iid": mr.iid,
        "head_sha": mr.latest.head_sha,
        "files": len(mr.latest.files),
        "versions": [v.head_sha for v in mr.versions],
    }
    return JSONResponse(body)


async def set_faults(request: Request) -> Response:
    update = await _parsed(request, FaultsUpdate)
    if isinstance(update, Response):
        return update
    gl = _gl(request)
    gl.update_faults(update)
    return JSONResponse(vars(gl.faults))


async def notes(request: Request) -> Response:
    """Every note, oldest first, with its MR, author, position and thread."""
    gl = _gl(request)
    out = []
    for (project, iid), threads in gl.discussions.items():
        mr = gl.mrs[(project, iid)]
        for discussion in threads:
            for note in discussion.notes:
                row = note.as_json(mr)
                row.update(mr=f"{project}!{iid}", discussion_id=discussion.id)
                out.append(row)
    out.sort(key=lambda n: int(n["id"]))
    return JSONResponse({"notes": out})


async def add_note(request: Request) -> Response:
    """A note by another account (the MR's author, say), which the API cannot make."""
    spec = await _parsed(request, NoteSpec)
    if isinstance(spec, Response):
        return spec
    gl = _gl(request)
    mr = gl.mrs.get((spec.project, spec.iid))
    if mr is None:
        return JSONResponse({"error": "no such merge request"}, 404)
    discussion = gl.add_note(mr, spec.body, spec.username, system=spec.system)
    return JSONResponse(discussion.as_json(mr))


async def stats(request: Request) -> Response:
    return JSONResponse(_gl(request).stats_json())


async def reset(request: Request) -> Response:
    _gl(request).reset()
    return JSONResponse({"ok": True})


def control_routes() -> list[BaseRoute]:
    table: list[tuple[str, str, Endpoint]] = [
        ("POST", "/_gl/mrs", upsert_mr),
        ("POST", "/_gl/faults", set_faults),
        ("GET", "/_gl/notes", notes),
        ("POST", "/_gl/notes", add_note),
        ("GET", "/_gl/stats", stats),
        ("POST", "/_gl/reset", reset),
    ]
    return [Route(path, _local_only(fn), methods=[method]) for method, path, fn in table]
