"""The simulated provider as an ASGI app: the chat endpoint and the quota views.

A chat request is screened in the order a provider does it (key, body, fair-use
switch, model, gateway errors), then concurrency, then every quota window. Only then
is it admitted: charged in every window at that instant, holding a concurrency slot
for its simulated latency. Server errors are decided before admission, as a gateway
failing in front of the model would, so they are never charged; timeouts and garbage
happen after it, because the model did run.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from scheduler.sandbox.provider import flavours
from scheduler.sandbox.provider.clock import SimClock
from scheduler.sandbox.provider.config import ProviderConfig
from scheduler.sandbox.provider.control import control_routes, models_view
from scheduler.sandbox.provider.credits import CallTokens
from scheduler.sandbox.provider.flavours import Reply
from scheduler.sandbox.provider.quotas import openai_headers, synthetic_header
from scheduler.sandbox.provider.review import completion
from scheduler.sandbox.provider.state import Simulator, Verdict

__all__ = ["CHAT_PATHS", "create_provider_app"]

CHAT_PATHS = (
    "/v1/chat/completions",
    "/openai/v1/chat/completions",
    "/api/coding/paas/v4/chat/completions",
    "/api/paas/v4/chat/completions",
)
_SERVER_ERRORS = (500, 502, 503)
# How much longer than the client's timeout a timeout fault holds the request.
_TIMEOUT_MARGIN_S = 0.5


class _Dropped(Response):
    """Starts a response and hangs up half-way: the client sees a broken connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body[:1], "more_body": True})


def _one(sim: Simulator) -> int:
    """A default-weight request's cost, the unit quota views speak in."""
    return round(sim.config.plan.default_weight * 1000)


def _quota_headers(sim: Simulator, verdict: Verdict | None) -> dict[str, str]:
    now, flavour = sim.clock.now(), sim.config.flavour
    if flavour == "synthetic":
        return synthetic_header(sim.windows, now, sim.clock, _one(sim))
    if flavour == "openai":
        free_at = None if verdict is None else verdict.free_at
        return openai_headers(sim.windows, now, sim.clock, _one(sim), free_at=free_at)
    return {}


def _respond(
    sim: Simulator,
    at: float,
    model: str,
    reply: Reply,
    *,
    cost: int = 0,
    verdict: Verdict | None = None,
    quota: bool = True,
) -> Response:
    """Log the outcome and attach the flavour's quota headers (401s get none)."""
    sim.record(at, model, reply.status, reply.code, cost)
    headers = {**reply.headers, **(_quota_headers(sim, verdict) if quota else {})}
    return Response(reply.body, reply.status, headers, media_type=reply.media_type)


async def _body(request: Request) -> dict[str, Any] | str:
    """The request JSON, or why it is not a chat request."""
    try:
        data = await request.json()
    except ValueError:
        return "the body is not valid JSON"
    if not isinstance(data, dict):
        return "the body must be a JSON object"
    if not isinstance(data.get("model"), str) or not data["model"]:
        return "'model' is required"
    if not isinstance(data.get("messages"), list):
        return "'messages' must be a list"
    return data


async def chat_completions(request: Request) -> Response:
    """Refusals are decided with no `await` between check and charge (see `state`)."""
    sim: Simulator = request.app.state.sim
    cfg = sim.config
    auth = request.headers.get("authorization")
    if not cfg.key_matches(auth):
        reply = flavours.unauthorized(cfg.flavour, missing=not auth)
        return _respond(sim, sim.clock.now(), "", reply, quota=False)
    data = await _body(request)
    now = sim.clock.now()
    if isinstance(data, str):
        return _respond(sim, now, "", flavours.bad_request(cfg.flavour, data))
    model = data["model"]
    refused = _screen(sim, model)
    if refused is not None:
        return _respond(sim, now, model, refused)
    tokens, cost = _metered(sim, data, now)
    if cost is None:
        return _respond(sim, now, model, flavours.not_in_plan(model))
    # A credit plan admits a call while any credit is left and bills it all at arrival.
    verdict = sim.check_windows(now, 1 if tokens is not None else cost)
    if verdict is not None:
        sim.quota_refusals[sim.refusal_cause(now, cost)] += 1
        reply = flavours.window_exhausted(cfg.flavour, verdict, sim.clock, now)
        return _respond(sim, now, model, reply, verdict=verdict)
    cold = sim.admit(now, model, cost)
    if tokens is not None:
        sim.bill(tokens, cost)
    try:
        return await _serve(sim, now, model, data["messages"], cost, cold, tokens)
    finally:
        sim.release(model)


def _metered(
    sim: Simulator, data: dict[str, Any], now: float
) -> tuple[CallTokens | None, int | None]:
    """(tokens, cost): a credit plan's call in credits at the calendar's time factor,
    else the plan's weight for the model (tokens None)."""
    model, when = data["model"], sim.clock.calendar(now)
    if sim.meter is None:
        return None, sim.config.cost_milli(model, when)
    tokens = sim.meter.tokens(data, now)
    return tokens, sim.meter.credits_milli(model, tokens, when)


def _screen(sim: Simulator, model: str) -> Reply | None:
    """Everything that refuses a request before the quota is consulted."""
    cfg = sim.config
    if cfg.faults.fair_use:
        return flavours.fair_use()
    if model not in cfg.known_models:
        return flavours.unknown_model(cfg.flavour, model)
    if sim.roll(cfg.faults.error_rate):
        sim.fault_counts["5xx"] += 1
        status = _SERVER_ERRORS[sim.fault_rng.randrange(len(_SERVER_ERRORS))]
        return flavours.server_error(cfg.flavour, status)
    if sim.concurrency_full(model):
        return flavours.concurrency_limited(cfg.flavour)
    return None


async def _serve(
    sim: Simulator,
    at: float,
    model: str,
    messages: list[Any],
    cost: int,
    cold: bool,
    tokens: CallTokens | None = None,
) -> Response:
    """Hold the slot for the simulated latency, then answer (or misbehave)."""
    faults = sim.config.faults
    latency = sim.draw_latency()
    if cold:
        sim.fault_counts["cold_start"] += 1
        latency += faults.cold_start_s
    timeout = sim.roll(faults.timeout_rate)
    junk = not timeout and sim.roll(faults.garbage_rate)
    hold = sim.clock.real_seconds(latency)
    if timeout:
        sim.fault_counts["timeout"] += 1
        hold = max(hold, faults.client_timeout_s + _TIMEOUT_MARGIN_S)
    await asyncio.sleep(hold)
    if junk:
        sim.fault_counts["garbage"] += 1
        return _respond(sim, at, model, flavours.garbage(sim.fault_rng.random() < 0.5), cost=cost)
    body = completion(
        model, messages, created=int(time.time()), completion_id=uuid.uuid4().hex[:24]
    )
    if tokens is not None:
        body["usage"] = tokens.usage()
    reply = flavours.json_reply(200, body, "late" if timeout else None)
    if timeout and faults.timeout_action == "drop":
        sim.record(at, model, 0, "dropped", cost)
        return _Dropped(reply.body, 200, _quota_headers(sim, None), media_type=reply.media_type)
    return _respond(sim, at, model, reply, cost=cost)


def _models_path(chat_path: str) -> str:
    """The model list lives beside the chat endpoint, under the same base URL."""
    return chat_path.removesuffix("/chat/completions") + "/models"


def create_provider_app(config: ProviderConfig, *, clock: SimClock | None = None) -> Starlette:
    """A fresh simulated provider; `app.state.sim` is its state, for in-process checks.

    `clock` lets a caller share one simulated clock between several fakes.
    """
    routes: list[BaseRoute] = [Route(p, chat_completions, methods=["POST"]) for p in CHAT_PATHS]
    routes += [Route(_models_path(p), models_view, methods=["GET"]) for p in CHAT_PATHS]
    routes += control_routes()
    app = Starlette(routes=routes)
    app.state.sim = Simulator(config, clock)
    return app
