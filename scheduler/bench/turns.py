"""The interleaved turns of `reviewq bench limiter`: client processes, timed calls.

The contenders run in client processes (so the client-side Python cost is part of
the figure, as it is for a real worker) and take short turns, all clients on the same
contender at once, each turn starting behind a barrier (`scenario`). Every call must
be a grant: a denial aborts the bench.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier

from scheduler.bench.contenders import CALLS, Call, bench_plan
from scheduler.bench.figures import Result

__all__ = ["Job", "scenario"]

_START_TIMEOUT_S = 120.0

_barrier: Barrier | None = None  # set in each client process by _init_worker


@dataclass(frozen=True, slots=True)
class Job:
    names: tuple[str, ...]
    url: str
    prefix: str
    seconds: float
    warmup: float
    rounds: int


def _timed(call: Call, name: str, start: int, seconds: float) -> tuple[array[int], int]:
    """Per-call latencies (ns) and the wall time they span; `start` keeps ids fresh."""
    lat: array[int] = array("q")
    clock = time.perf_counter_ns
    began = t1 = clock()
    end = began + int(seconds * 1e9)
    i = start
    while t1 < end:
        t0 = clock()
        granted = call(i)
        t1 = clock()
        lat.append(t1 - t0)
        if not granted:
            raise RuntimeError(f"{name} denied call {i}; the bench measures grants only")
        i += 1
    return lat, t1 - began


def _init_worker(barrier: Barrier) -> None:
    """A pickled barrier can only reach pool processes as they start."""
    global _barrier
    _barrier = barrier


def _turns(names: Sequence[str], rounds: int) -> list[str]:
    """Whose turn it is, round by round. Every other round runs the one before it
    backwards, and each pair of rounds starts one contender later, so each contender
    takes every place in a round and follows different ones: what one leaves behind
    in Redis or the CPU caches lands on all alike."""
    turns: list[str] = []
    for r in range(rounds):
        order = [names[(r // 2 + k) % len(names)] for k in range(len(names))]
        turns += order[::-1] if r % 2 else order
    return turns


def _worker(job: Job, index: int) -> dict[str, tuple[int, bytes]]:
    """One client process with every contender's client: each turn starts behind the
    barrier, so all clients run the same contender at the same moment."""
    assert _barrier is not None
    elapsed = dict.fromkeys(job.names, 0)
    lats = {name: array("q") for name in job.names}
    with contextlib.ExitStack() as stack:
        tag = f"{index}.{os.getpid()}"
        calls = {
            name: CALLS[name](job.url, f"{job.prefix}:{name}", tag, stack, bench_plan())
            for name in job.names
        }
        made = dict.fromkeys(job.names, 0)
        for name, call in calls.items():  # connect, load scripts, warm up
            call(-1)
            made[name] = len(_timed(call, name, 0, job.warmup)[0])
        for name in _turns(job.names, job.rounds):
            _barrier.wait(_START_TIMEOUT_S)
            lat, spent = _timed(calls[name], name, made[name], job.seconds)
            made[name] += len(lat)
            lats[name].extend(lat)
            elapsed[name] += spent
    return {name: (elapsed[name], lats[name].tobytes()) for name in job.names}


def scenario(job: Job, clients: int) -> list[Result]:
    """Every contender of `job` in `clients` client processes, one row each."""
    ctx = mp.get_context("spawn")  # children must not inherit our server's handles
    turns = len(job.names) * job.rounds
    timeout = _START_TIMEOUT_S + len(job.names) * job.warmup + turns * (job.seconds + 1)
    # Children inherit SIGINT blocked: a Ctrl-C is the parent's to handle, and it stops
    # them by their own handles when leaving the block (on an error too), tracebacks-free.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        pool = ctx.Pool(clients, _init_worker, (ctx.Barrier(clients),))
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    with pool:
        args = [(job, k) for k in range(clients)]
        reports = pool.starmap_async(_worker, args, chunksize=1).get(timeout)
    return [_result(name, clients, [r[name] for r in reports]) for name in job.names]


def _result(name: str, clients: int, reports: list[tuple[int, bytes]]) -> Result:
    """Ops/s summed over the clients (each over its own turns' time), and latency
    percentiles over every call."""
    lats = [(elapsed, array("q", payload)) for elapsed, payload in reports]
    ops = sum(len(lat) / (elapsed / 1e9) for elapsed, lat in lats)
    samples = sorted(ns for _, lat in lats for ns in lat)
    p50, p99 = (samples[min(len(samples) - 1, int(len(samples) * q))] / 1000 for q in (0.5, 0.99))
    return Result(name, clients, round(ops, 1), round(p50, 2), round(p99, 2))
