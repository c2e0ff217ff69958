"""The bench's raw HTTP client reads real servers' responses right, and fails loudly.

Two real servers over real sockets, never mocks: uvicorn serving a small ASGI app (what
the bench talks to), and a bare asyncio server that answers with exact bytes, for the
answers uvicorn would never give (split heads, no length, malformed lines).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import pytest

from scheduler.bench.http_client import (
    Connection,
    HttpProtocolError,
    Response,
    build_request,
    parse_head,
)
from scheduler.sandbox import serve_in_thread

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    """`/echo` answers the request body; `/empty` 204; `/stream` a chunked body."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = scope["path"]
    length = (b"content-length", str(len(body)).encode())
    status, headers = (204, []) if path == "/empty" else (201, [(b"x-echo", b"yes"), length])
    if path == "/stream":
        headers = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if path == "/stream":  # no Content-Length: uvicorn sends it chunked
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
    await send({"type": "http.response.body", "body": b"" if status == 204 else body})


@pytest.fixture(scope="module")
def uvicorn_url() -> Iterator[str]:
    with serve_in_thread(_app) as handle:
        yield handle.url


def _run(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


def test_keep_alive_requests_against_uvicorn(uvicorn_url: str) -> None:
    async def go() -> tuple[list[Response], int]:
        connection = Connection.for_url(uvicorn_url)
        bodies = [b"x" * n for n in (0, 1, 20_000, 70_000)]
        sent = [build_request("POST", f"{uvicorn_url}/echo", {"A": "b"}, b) for b in bodies]
        try:
            return [await connection.request(raw) for raw in sent], connection.opened
        finally:
            await connection.close()

    responses, opened = _run(go())
    assert opened == 1
    assert [len(r.body) for r in responses] == [0, 1, 20_000, 70_000]
    assert all(r.status == 201 and r.headers["x-echo"] == "yes" for r in responses)
    assert all(r.keep_alive for r in responses)


def test_no_content_and_chunked_against_uvicorn(uvicorn_url: str) -> None:
    async def go() -> tuple[Response, str, Response, int]:
        connection = Connection.for_url(uvicorn_url)
        empty = await connection.request(build_request("POST", f"{uvicorn_url}/empty"))
        with pytest.raises(HttpProtocolError) as chunked:
            await connection.request(build_request("GET", f"{uvicorn_url}/stream"))
        again = await connection.request(build_request("POST", f"{uvicorn_url}/echo", body=b"k"))
        await connection.close()
        return empty, str(chunked.value), again, connection.opened

    empty, chunked, again, opened = _run(go())
    assert empty.status == 204 and empty.body == b""
    assert "chunked" in chunked
    assert again.body == b"k" and opened == 2  # the broken connection was replaced


async def _canned(replies: Sequence[Sequence[bytes]], close_after: bool = False) -> Any:
    """A server answering the n-th request with replies[n], written in those pieces."""
    answered = iter(replies)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            for piece in next(answered, ()):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.01)
            if close_after:
                break
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _ask(replies: Sequence[Sequence[bytes]], asks: int = 1, close_after: bool = False) -> Any:
    """What `asks` requests on one Connection got: a Response or the exception."""

    async def go() -> tuple[list[Response | BaseException], int]:
        server = await _canned(replies, close_after)
        port = server.sockets[0].getsockname()[1]
        connection = Connection("127.0.0.1", port)
        out: list[Response | BaseException] = []
        for _ in range(asks):
            try:
                out.append(await connection.request(build_request("POST", f"http://x:{port}/")))
            except (HttpProtocolError, asyncio.IncompleteReadError, OSError) as exc:
                out.append(exc)
        await connection.close()
        server.close()
        await server.wait_closed()
        return out, connection.opened

    return _run(go())


def test_a_response_split_anywhere_is_read_whole() -> None:
    reply = b"HTTP/1.1 202 Accepted\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello"
    pieces = [reply[:3], reply[3:30], reply[30:-2], reply[-2:]]
    (response,), opened = _ask([pieces])
    assert isinstance(response, Response) and response.status == 202
    assert response.body == b"hello" and response.headers["x-a"] == "1, 2" and opened == 1


def test_connection_close_opens_a_new_connection() -> None:
    reply = [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"]
    results, opened = _ask([reply, reply], asks=2, close_after=True)
    assert [r.status for r in results] == [200, 200] and opened == 2
    assert not results[0].keep_alive


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"HTTP/1.1 200 OK\r\n\r\nbody until close", "without Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", "chunked"),
        (b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n", "status line"),
        (b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", "status line"),
        (b"HTTP/1.1 100 Continue\r\n\r\n", "interim"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nok", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 0\r\n\r\n", "header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n folded\r\n\r\n", "header line"),
    ],
)
def test_responses_it_cannot_read_are_errors(reply: bytes, message: str) -> None:
    (result,), _ = _ask([[reply]])
    assert isinstance(result, HttpProtocolError) and message in str(result)


def test_a_server_that_closes_mid_response_is_an_error() -> None:
    (result,), _ = _ask([[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"]], close_after=True)
    assert isinstance(result, asyncio.IncompleteReadError)


def test_build_request_is_one_well_formed_message() -> None:
    raw = build_request("POST", "http://127.0.0.1:8080/a?b=1", {"X-K": "v"}, b"{}")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"POST /a?b=1 HTTP/1.1",
        b"Host: 127.0.0.1:8080",
        b"X-K: v",
        b"Content-Length: 2",
    ]
    assert body == b"{}"
    with pytest.raises(ValueError):
        build_request("GET", "http://h/", {"X-K": "v\r\nInjected: 1"})
    with pytest.raises(ValueError):
        build_request("GET", "https://h/")


def test_parse_head_keep_alive_rules() -> None:
    assert parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")[3] is False
    head = b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"
    assert parse_head(head)[3] is True
    assert parse_head(b"HTTP/1.1 304 Not Modified\r\n\r\n")[2] == 0
