"""The HTTP side of a delivery: media type, body size, and answers.

The body is bounded twice: by Content-Length before a byte is read, and by counting
while reading, since a sender may omit the header (chunked) or lie in it.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

__all__ = [
    "FORM_TYPE",
    "JSON_TYPE",
    "HttpError",
    "answer",
    "form_payload",
    "media_type",
    "read_body",
]

JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"


class HttpError(Exception):
    """Ends a request with `status`; `outcome` is the metrics label, `detail` the text."""

    def __init__(
        self, status: int, outcome: str, detail: str, *, retry_after_s: int | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.outcome, self.detail = status, outcome, detail
        self.retry_after_s = retry_after_s


def answer(
    status: int,
    outcome: str,
    detail: str,
    *,
    retry_after_s: int | None = None,
    **extra: str | int | None,
) -> Response:
    """A small JSON body the forge shows in its delivery log: what happened and why."""
    data = {"status": outcome, "detail": detail}
    data.update({k: str(v) for k, v in extra.items() if v is not None})
    if retry_after_s is None and (status == 503 or outcome == "in_progress"):
        retry_after_s = 5
    headers = None if retry_after_s is None else {"Retry-After": str(retry_after_s)}
    return Response(json.dumps(data), status, headers, media_type=JSON_TYPE)


def media_type(request: Request) -> str:
    """`application/json; charset=utf-8` -> `application/json`."""
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, at most `limit` bytes; 413 past it, 400 for a bad Content-Length."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HttpError(400, "bad_request", "Content-Length must be a whole number")
        if int(declared) > limit:
            raise HttpError(413, "too_large", _too_large(limit))
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HttpError(413, "too_large", _too_large(limit))
            chunks.append(chunk)
    except ClientDisconnect:
        raise HttpError(400, "bad_request", "the client hung up before the body ended") from None
    return b"".join(chunks)


def _too_large(limit: int) -> str:
    return f"the body is larger than {limit} bytes ([webhook] max_body_bytes)"


def form_payload(body: bytes) -> bytes:
    """The JSON in a form-encoded GitHub delivery's `payload` field."""
    try:
        fields = parse_qs(body.decode("ascii"), max_num_fields=100)
    except (UnicodeDecodeError, ValueError):
        raise HttpError(400, "bad_request", "the form body is not URL-encoded") from None
    values = fields.get("payload")
    if not values:
        raise HttpError(400, "bad_request", "payload is required in a form-encoded delivery")
    return values[0].encode()
