"""The side doors: providers' quota endpoints and model lists, and `/_sim/*` for tests
and `simulate`.

Quota endpoints and model lists need the key, as the real ones do, and never count
against the quota.
`/_sim/*` is unauthenticated: the simulator listens on loopback and holds no secret.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from scheduler.sandbox.provider import flavours
from scheduler.sandbox.provider.quotas import synthetic_quotas, zai_quota_limits
from scheduler.sandbox.provider.state import Simulator

__all__ = ["control_routes", "models_view"]


def _sim(request: Request) -> Simulator:
    sim: Simulator = request.app.state.sim
    return sim


def _authorized(request: Request, *, raw_ok: bool) -> Response | None:
    sim = _sim(request)
    auth = request.headers.get("authorization")
    if sim.config.key_matches(auth, raw_ok=raw_ok):
        return None
    reply = flavours.unauthorized(sim.config.flavour, missing=not auth)
    return Response(reply.body, reply.status, media_type=reply.media_type)


async def synthetic_quota_view(request: Request) -> Response:
    """`GET /v2/quotas`: the same JSON as the `x-synthetic-quotas` header."""
    if (denied := _authorized(request, raw_ok=False)) is not None:
        return denied
    sim = _sim(request)
    if sim.config.quota_endpoint_empty:  # an API key since about 2026-09-14
        return JSONResponse({})
    one = round(sim.config.plan.default_weight * 1000)
    return JSONResponse(synthetic_quotas(sim.windows, sim.clock.now(), sim.clock, one))


async def zai_quota_view(request: Request) -> Response:
    """`GET /api/monitor/usage/quota/limit`, which takes the raw key in Authorization."""
    if (denied := _authorized(request, raw_ok=True)) is not None:
        return denied
    sim = _sim(request)
    one = 1 if sim.config.credit_metered else round(sim.config.plan.default_weight * 1000)
    level = _level(sim.config.plan.name) if sim.config.credit_metered else None
    view = zai_quota_limits(sim.windows, sim.clock.now(), sim.clock, one, level=level)
    return JSONResponse(view)


def _level(plan_name: str) -> str | None:
    """The tier a V3 answer names, as the preset's name spells it."""
    return next((t for t in ("lite", "pro", "max") if t in plan_name), None)


async def models_view(request: Request) -> Response:
    """`GET {base}/models`, OpenAI's list shape, as Synthetic documents it (its /models
    "do not count against your subscription limits", synthetic.new/docs/openai/models,
    read 2026-12-07). It needs the key and costs nothing, so `reviewq accounts test`
    checks a key, a base URL and a model id with it."""
    if (denied := _authorized(request, raw_ok=False)) is not None:
        return denied
    owner = _sim(request).config.flavour
    models = _sim(request).config.known_models
    data = [{"id": m, "object": "model", "owned_by": owner} for m in models]
    return JSONResponse({"object": "list", "data": data})


async def stats(request: Request) -> Response:
    return JSONResponse(_sim(request).stats())


async def log(request: Request) -> Response:
    return JSONResponse({"entries": [entry.as_json() for entry in _sim(request).log]})


async def reset(request: Request) -> Response:
    _sim(request).reset()
    return JSONResponse({"ok": True})


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        data = await request.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


async def configure(request: Request) -> Response:
    """Change faults, latency, concurrency or `provider_quota` while running.

    A top-level `fair_use` is shorthand for `faults.fair_use`.
    """
    changes = await _json_object(request)
    if changes is None:
        return JSONResponse({"error": "expected a JSON object"}, 400)
    if "fair_use" in changes:
        fair_use = changes.pop("fair_use")
        changes["faults"] = {**(changes.get("faults") or {}), "fair_use": fair_use}
    sim = _sim(request)
    try:
        sim.reconfigure(changes)
    except (ValidationError, ValueError, TypeError) as exc:
        return JSONResponse({"error": str(exc)}, 400)
    return JSONResponse(sim.config.model_dump(mode="json", exclude={"api_key", "plan"}))


async def advance(request: Request) -> Response:
    """Skip simulated time, e.g. past a 5-hour window, without waiting for it."""
    data = await _json_object(request)
    seconds = None if data is None else data.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return JSONResponse({"error": 'expected {"seconds": <number>}'}, 400)
    sim = _sim(request)
    try:
        sim.clock.advance(float(seconds))
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, 400)
    return JSONResponse({"sim_now": sim.clock.now()})


def control_routes() -> list[BaseRoute]:
    return [
        Route("/v2/quotas", synthetic_quota_view, methods=["GET"]),
        Route("/api/monitor/usage/quota/limit", zai_quota_view, methods=["GET"]),
        Route("/_sim/stats", stats, methods=["GET"]),
        Route("/_sim/log", log, methods=["GET"]),
        Route("/_sim/reset", reset, methods=["POST"]),
        Route("/_sim/config", configure, methods=["POST"]),
        Route("/_sim/advance", advance, methods=["POST"]),
    ]
