"""`/_gh/*`: the side door tests and `reviewq sandbox github` users drive the fake with.

These routes take no token, so they answer only requests that arrive over loopback
(both ends of the connection), unless the config's `remote_control` says otherwise:
the API's token must stay the only way in when the fake is bound to a public address.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from scheduler.sandbox.github.shapes import review_json
from scheduler.sandbox.github.state import FakeGitHub, FaultsUpdate, PullSpec, ReviewSpec
from scheduler.sandbox.server import is_loopback

__all__ = ["control_routes"]

M = TypeVar("M", bound=BaseModel)
Endpoint = Callable[[Request], Awaitable[Response]]


def _gh(request: Request) -> FakeGitHub:
    gh: FakeGitHub = request.app.state.github
    return gh


def _local_only(endpoint: Endpoint) -> Endpoint:
    """Both ends loopback: a fake bound to 0.0.0.0 still refuses remote callers."""

    async def guarded(request: Request) -> Response:
        client, server = request.scope.get("client"), request.scope.get("server")
        local = bool(client and server and is_loopback(client[0]) and is_loopback(server[0]))
        if not local and not _gh(request).config.remote_control:
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


async def upsert_pull(request: Request) -> Response:
    """Create a PR, or move one to a new head; earlier heads stay reviewable."""
    spec = await _parsed(request, PullSpec)
    if isinstance(spec, Response):
        return spec
    pull = _gh(request).upsert(spec)
    body = {
        "owner": pull.owner,
        "repo": pull.repo,
        "number": pull.number,
        "head_sha": pull.head_sha,
        "files": len(pull.files),
        "heads": list(pull.files_by_sha),
    }
    return JSONResponse(body)


async def set_faults(request: Request) -> Response:
    update = await _parsed(request, FaultsUpdate)
    if isinstance(update, Response):
        return update
    gh = _gh(request)
    gh.update_faults(update)
    return JSONResponse(vars(gh.faults))


async def reviews(request: Request) -> Response:
    """Every review posted, in order, with the PR it went to and its inline comments."""
    base = str(request.base_url).rstrip("/")
    out = [
        {**review_json(r, base), "pr": f"{r.owner}/{r.repo}#{r.number}", "comments": r.comments}
        for r in _gh(request).reviews
    ]
    return JSONResponse({"reviews": out})


async def add_review(request: Request) -> Response:
    """A review by another account (the PR's author, say), which the API cannot make:
    everything posted with the token is written by the token's own account."""
    spec = await _parsed(request, ReviewSpec)
    if isinstance(spec, Response):
        return spec
    review = _gh(request).add_review_by(spec)
    if review is None:
        return JSONResponse({"error": "no such pull request"}, 404)
    return JSONResponse(review_json(review, str(request.base_url).rstrip("/")))


async def stats(request: Request) -> Response:
    return JSONResponse(_gh(request).stats_json())


async def reset(request: Request) -> Response:
    _gh(request).reset()
    return JSONResponse({"ok": True})


def control_routes() -> list[BaseRoute]:
    table: list[tuple[str, str, Endpoint]] = [
        ("POST", "/_gh/prs", upsert_pull),
        ("POST", "/_gh/faults", set_faults),
        ("GET", "/_gh/reviews", reviews),
        ("POST", "/_gh/reviews", add_review),
        ("GET", "/_gh/stats", stats),
        ("POST", "/_gh/reset", reset),
    ]
    return [Route(path, _local_only(fn), methods=[method]) for method, path, fn in table]
