"""Error bodies in each provider's real shape, so the client's classifier is tested honestly.

Shapes and wording come from docs/provider-facts (Synthetic's string `error`, Z.AI's
`{"error": {"code": "1308", ...}}` with string codes and Beijing reset times, OpenAI's
error object with `x-ratelimit-*`). Where the facts give no wording (Synthetic's 401,
404 and concurrency 429), the text is plain and carries no quota signal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from scheduler.sandbox.provider.clock import SimClock, zai_wall_time
from scheduler.sandbox.provider.config import Flavour
from scheduler.sandbox.provider.state import Verdict

__all__ = [
    "SYNTHETIC_CREDITS_MESSAGE",
    "SYNTHETIC_LIMIT_MESSAGE",
    "Reply",
    "bad_request",
    "concurrency_limited",
    "fair_use",
    "garbage",
    "json_reply",
    "not_in_plan",
    "server_error",
    "unauthorized",
    "unknown_model",
    "window_exhausted",
]

SYNTHETIC_LIMIT_MESSAGE = (
    "You've exceeded your subscription rate limits. Upgrade, or try again later."
)
SYNTHETIC_CREDITS_MESSAGE = "Insufficient quota and token balance."
_ZAI_CONCURRENCY = (
    "High concurrency usage of this API, please reduce concurrency or contact customer "
    "service to increase limits"
)
_ZAI_FAIR_USE = (
    "Your account's current usage pattern does not comply with the fair use policy, "
    "and its request frequency has been restricted"
)
_NGINX_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n</body>\r\n</html>\r\n"
)
_DAY_S = 86_400


@dataclass
class Reply:
    """A response before it becomes HTTP; `code` labels it in stats and the log."""

    status: int
    body: bytes
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = "application/json"


def json_reply(status: int, data: Any, code: str | None = None) -> Reply:
    return Reply(status, json.dumps(data).encode(), code)


def _zai(status: int, code: str, message: str) -> Reply:
    return json_reply(status, {"error": {"code": code, "message": message}}, code)


def _openai(status: int, message: str, kind: str, code: str | None, label: str) -> Reply:
    error = {"message": message, "type": kind, "param": None, "code": code}
    return json_reply(status, {"error": error}, label)


def unauthorized(flavour: Flavour, *, missing: bool) -> Reply:
    if flavour == "zai":
        if missing:
            text = "Authentication parameter not received in Header, unable to authenticate"
            return _zai(401, "1001", text)
        return _zai(401, "1000", "Authentication Failed")
    if flavour == "synthetic":
        return json_reply(401, {"error": "Invalid API key"}, "auth")
    message = "Incorrect API key provided. You can find your API key in your account settings."
    return _openai(401, message, "invalid_request_error", "invalid_api_key", "auth")


def bad_request(flavour: Flavour, message: str) -> Reply:
    if flavour == "zai":
        return _zai(400, "1214", f"Invalid request parameter: {message}")
    if flavour == "synthetic":
        return json_reply(400, {"error": message}, "bad_request")
    return _openai(400, message, "invalid_request_error", None, "bad_request")


def unknown_model(flavour: Flavour, model: str) -> Reply:
    """Z.AI answers an unknown model with business code 1211 on a 400, not a 404."""
    if flavour == "zai":
        return _zai(400, "1211", "Model does not exist, please check the model code")
    if flavour == "synthetic":
        return json_reply(404, {"error": f"Model not found: {model}"}, "model")
    message = f"The model `{model}` does not exist or you do not have access to it."
    return _openai(404, message, "invalid_request_error", "model_not_found", "model")


def not_in_plan(model: str) -> Reply:
    """Z.AI's 1311: a credit plan bills only the models its price table lists."""
    return _zai(429, "1311", f"The model {model} is not included in your plan")


def fair_use() -> Reply:
    """Z.AI's 1313, whatever the flavour: the switch exists to test needs-person handling."""
    return _zai(429, "1313", _ZAI_FAIR_USE)


def server_error(flavour: Flavour, status: int) -> Reply:
    if status == 502:
        return Reply(502, _NGINX_502, "5xx", media_type="text/html")
    if flavour == "zai":
        return _zai(status, "500", "Internal Error")
    if flavour == "synthetic":
        return json_reply(status, {"error": "Internal server error"}, "5xx")
    message = "The server had an error while processing your request. Sorry about that!"
    return _openai(status, message, "server_error", None, "5xx")


def concurrency_limited(flavour: Flavour) -> Reply:
    if flavour == "zai":
        return _zai(429, "1302", _ZAI_CONCURRENCY)
    if flavour == "synthetic":
        text = "Too many concurrent requests for this model. Please wait and try again."
        return json_reply(429, {"error": text}, "concurrency")
    message = "Too many concurrent requests. Please slow down."
    return _openai(429, message, "requests", "rate_limit_exceeded", "concurrency")


def window_exhausted(flavour: Flavour, verdict: Verdict, clock: SimClock, now: float) -> Reply:
    """The provider's quota refusal; reset instants are wall-clock (see `clock`)."""
    window = verdict.window
    if flavour == "zai":
        when = zai_wall_time(clock.wall_at(verdict.free_at))
        if window.duration > _DAY_S:
            return _zai(
                429, "1310", f"Weekly/Monthly Limit Exhausted. Your limit will reset at {when}"
            )
        span = _zai_span(window.duration)
        return _zai(429, "1308", f"Usage limit reached for {span}. Your limit will reset at {when}")
    if flavour == "synthetic":
        if window.unit in ("usd", "credits"):
            return json_reply(402, {"error": SYNTHETIC_CREDITS_MESSAGE}, "credits")
        return json_reply(429, {"error": SYNTHETIC_LIMIT_MESSAGE}, "rate_limit")
    wait = clock.real_seconds(max(verdict.free_at - now, 0.0))
    message = f"Rate limit reached for requests. Please try again in {wait:.3f}s."
    return _openai(429, message, "requests", "rate_limit_exceeded", "rate_limit_exceeded")


def _zai_span(seconds: float) -> str:
    """`5 hour`, as in Z.AI's template "Usage limit reached for ${number} ${unit}"."""
    for size, unit in ((3600, "hour"), (60, "minute")):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} second"


def garbage(as_json: bool) -> Reply:
    """A 200 that is useless: not JSON at all, or JSON without a choice."""
    if as_json:
        return json_reply(200, {"choices": []}, "garbage")
    page = b"<html><body>upstream returned no content</body></html>"
    return Reply(200, page, "garbage", media_type="text/html")
