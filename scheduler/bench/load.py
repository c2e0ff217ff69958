"""The load generators of `reviewq bench webhook`: the raw client (default) and httpx.

Both send a batch of pre-signed deliveries over `concurrency` keep-alive connections,
one request at a time per connection, and time each delivery from just before its
request is written to just after its whole response is read. Connections are opened,
and checked with a `GET /healthz`, before the clock starts.

`raw` (`scheduler.bench.http_client`) is the default because the load generator shares the
server's cores and GitHub's senders do not: the cheaper the client, the closer the
figure is to what the server alone can do. `httpx` stays selectable, to compare with
figures measured before and to check the raw client against a well-known one.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, Literal, TypeVar

import httpx

from scheduler.bench.http_client import Connection, HttpProtocolError, build_request

__all__ = ["CLIENTS", "Client", "Delivery", "drive", "run"]

Client = Literal["raw", "httpx"]
CLIENTS: tuple[Client, ...] = ("raw", "httpx")
Delivery = tuple[bytes, dict[str, str]]
Drive = tuple[list[float], Counter[str], float]
_TIMEOUT_S = 30.0
_T = TypeVar("_T")
_Send = Callable[[], Awaitable[None]]


async def drive(url: str, batch: list[Delivery], concurrency: int, client: Client = "raw") -> Drive:
    """Send `batch` to `url`'s GitHub webhook; per-delivery latencies in seconds,
    statuses (an exception's type name for a delivery that got no response) and the
    wall time from the start signal until the last response."""
    target = url + "/webhooks/github"
    sender: Callable[..., Awaitable[None]]
    prepared: list[Any]
    if client == "raw":
        sender, prepared = _raw_sender, [build_request("POST", target, h, b) for b, h in batch]
    else:
        requests = [httpx.Request("POST", target, content=b, headers=h) for b, h in batch]
        sender, prepared = _httpx_sender, requests
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    ready, start = asyncio.Semaphore(0), asyncio.Event()
    work: Iterator[Any] = iter(prepared)

    async def gate() -> None:
        ready.release()
        await start.wait()

    tasks = [
        asyncio.create_task(sender(url, work, gate, latencies, statuses))
        for _ in range(concurrency)
    ]
    for _ in tasks:
        await ready.acquire()
    began = time.perf_counter()
    start.set()
    await asyncio.gather(*tasks)
    return latencies, statuses, time.perf_counter() - began


async def _raw_sender(
    url: str,
    work: Iterator[bytes],
    gate: _Send,
    latencies: list[float],
    statuses: Counter[str],
) -> None:
    """One connection, sending requests serialized before the clock started."""
    connection = Connection.for_url(url)
    health = await connection.request(build_request("GET", url + "/healthz"))
    if health.status != 200:
        raise RuntimeError(f"GET /healthz answered {health.status}")
    await gate()
    try:
        for raw in work:
            began = time.perf_counter()
            try:
                async with asyncio.timeout(_TIMEOUT_S):
                    response = await connection.request(raw)
                statuses[str(response.status)] += 1
            except (HttpProtocolError, OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1
            latencies.append(time.perf_counter() - began)
    finally:
        await connection.close()


async def _httpx_sender(
    url: str,
    work: Iterator[httpx.Request],
    gate: _Send,
    latencies: list[float],
    statuses: Counter[str],
) -> None:
    """A client of its own with one keep-alive connection: senders sharing one pool
    make httpcore hand requests between connections and retry them, costing more CPU
    than the server spends."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(limits=limits, timeout=_TIMEOUT_S, verify=_TLS) as client:
        await client.get(url + "/healthz")  # connect before the clock starts
        await gate()
        for request in work:
            began = time.perf_counter()
            try:
                response = await client.send(request)
                statuses[str(response.status_code)] += 1
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
            latencies.append(time.perf_counter() - began)


_TLS = ssl.create_default_context()  # unused over http://, but built once, not per client


def run(coro: Coroutine[Any, Any, _T]) -> _T:
    """On uvloop when installed: the client's loop costs CPU the server could use."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)
