"""`reviewq bench limiter`: our acquire against the floor and two peer libraries.

A limiter that costs much more than a bare EVALSHA, or than a widely used library,
would be the first thing a reviewer asks about, so the claim is measured on the
user's own machine, in one run against one private server, never quoted.

The run is in three parts: the contenders and their shared plan
(`scheduler.bench.contenders`), the interleaved turns in client processes
(`scheduler.bench.turns`), and the figures with their bars
(`scheduler.bench.figures`). This module runs them in order and returns a
`BenchReport`; `reviewq bench limiter` (scheduler.cli.bench) prints it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Iterator
from types import FrameType

import redis

from scheduler.bench.contenders import NAMES, available, keys_under, memory
from scheduler.bench.figures import Bar, BenchReport, Result, ratio_bars
from scheduler.bench.turns import Job, scenario
from scheduler.sandbox.localredis import LocalRedis

__all__ = [
    "NAMES",
    "Bar",
    "BenchReport",
    "Result",
    "available",
    "ratio_bars",
    "redis_server",
    "run_limiter_bench",
]


def run_limiter_bench(
    url: str, seconds: float, clients: list[int], warmup: float = 0.3, rounds: int = 12
) -> BenchReport:
    """Every contender at every client count against `url`, then memory per account.

    The contenders take turns of `seconds`, `rounds` times over, in the same client
    processes: on a shared 2-core machine a burst of background work lasts longer
    than a turn, so it falls on every contender alike instead of on whichever one ran
    its whole measurement at that moment (a ratio swing of +-20 % in one pass). Keys
    live under a fresh prefix, removed afterwards, so a REDIS_URL server the user
    cares about keeps nothing of the run.
    """
    names, _ = available()
    prefix = f"reviewq-bench:{uuid.uuid4().hex[:12]}"
    results = [
        result
        for n in clients
        for result in scenario(Job(tuple(names), url, f"{prefix}:{n}", seconds, warmup, rounds), n)
    ]
    sizes: dict[str, int] = {}
    with redis.Redis.from_url(url) as client:
        try:
            for name in names:
                if name != "evalsha":  # it keeps no state to measure
                    sizes[name] = memory(name, url, client, f"{prefix}:mem:{name}")
        finally:
            for key in keys_under(client, prefix):
                client.unlink(key)
    return BenchReport(results, sizes)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """REDIS_URL if set, else a private server on a TCP port, as the peers want a URL.

    SIGTERM is turned into SystemExit meanwhile, so it unwinds through our finally
    blocks instead of leaving the server and client processes behind.
    """

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    url = os.environ.get("REDIS_URL", "").strip()
    server = None if url else LocalRedis(port=0)
    try:
        yield server.start() if server else url
    finally:
        if server:
            server.stop()
        signal.signal(signal.SIGTERM, previous)
