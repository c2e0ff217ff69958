"""`reviewq bench limiter`: our acquire against the floor and two peer libraries.

A limiter that costs much more than a bare EVALSHA, or than a widely used library,
would be the first thing a reviewer asks about, so the claim is measured on the
user's own machine, in one run against one private server, never quoted.

The contenders run in client processes (so the client-side Python cost is part of
the figure, as it is for a real worker) and take short turns, all clients on the same
contender at once, each turn starting behind a barrier (`run_limiter_bench`).
Every call must be a grant: a denial takes a different path through each script, so
the limits are set far above what a run can spend and a denial aborts the bench.

reviewq's concurrency cap is 10**6, so the cap check runs on every call yet never
denies. Leases last 1 ms and are not released: acquire itself sweeps expired ones once
32 are stored, so the lease set holds a few dozen entries, like production, where it
holds the calls in flight (at most the cap, typically 1 to 30) because every call
releases its lease. No uncounted release traffic competes with the timed calls.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import json
import multiprocessing as mp
import os
import signal
import sys
import time
import uuid
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from multiprocessing.synchronize import Barrier
from types import FrameType
from typing import Any, cast

import click
import redis
from rich.console import Console
from rich.table import Table

from scheduler.bench.report import report_command
from scheduler.bench.webhook import webhook_command
from scheduler.quota.limiter import Grant, Limiter
from scheduler.quota.plans import MILLI, Plan, Policy, Window, get_preset, parse_duration_ms
from scheduler.sandbox.localredis import LocalRedis, RedisServerNotFound, RedisServerStartError

__all__ = ["NAMES", "BenchReport", "Result", "bench", "ratio_bars", "run_limiter_bench"]

NAMES = ("reviewq", "evalsha", "limits-moving-window", "pyrate-redis-bucket")
_PEER_MODULE = {"limits-moving-window": "limits", "pyrate-redis-bucket": "pyrate_limiter"}
_HUGE = 10**9  # requests per window: no run can spend it, so every call is a grant
_LEASE_MS = 1  # see the module docstring: keeps the lease set production-sized
_NEVER_FULL = 10**6
_PR_IDS = 997
_START_TIMEOUT_S = 120.0
_SECONDS = "Timed seconds of each turn, after 0.3 s of warm-up per contender [0.25]."
_ROUNDS = "Turns each contender takes, in rotating order, at each client count [12]."
_CLIENTS = "Client process counts to run, comma-separated [1,4]."

Call = Callable[[int], bool]
Bar = tuple[str, float | None, str, bool | None]
Spec = tuple[Plan, Policy]
Stack = contextlib.ExitStack

_barrier: Barrier | None = None  # set in each client process by _init_worker


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    clients: int
    ops_per_s: float
    p50_us: float
    p99_us: float


@dataclass(frozen=True, slots=True)
class BenchReport:
    results: list[Result]
    memory_bytes: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"results": [asdict(r) for r in self.results], "memory_bytes": self.memory_bytes}


@dataclass(frozen=True, slots=True)
class _Job:
    names: tuple[str, ...]
    url: str
    prefix: str
    seconds: float
    warmup: float
    rounds: int


def _bench_plan() -> tuple[Plan, Policy]:
    """Two rolling windows like Z.AI's, with a PR share and reserve so the PR rule is
    evaluated on every call (it never binds: the limits are far out of reach)."""
    windows = tuple(  # a week allows 5x the 5 hours, as on Z.AI (and pyrate insists)
        Window(name=f"w{ms}", limit_milli=k * _HUGE * MILLI, duration_ms=ms)
        for k, ms in ((1, parse_duration_ms("5h")), (5, parse_duration_ms("7d")))
    )
    plan = Plan(
        name="bench",
        provider="bench",
        windows=windows,
        concurrency=_NEVER_FULL,
        source="reviewq bench",
        as_of=dt.date.today(),
    )
    return plan, Policy(pr_share=0.25, reserve=0.1)


def _rates(plan: Plan) -> list[tuple[int, int]]:
    """The plan's windows as (requests, duration ms), the peers' vocabulary."""
    cost = plan.cost_milli("bench")
    return [(w.limit_milli // cost, w.duration_ms) for w in plan.windows]


def _client(url: str, stack: contextlib.ExitStack) -> redis.Redis:
    client = redis.Redis.from_url(url)
    stack.callback(client.close)
    return client


def _reviewq_call(url: str, prefix: str, tag: str, stack: Stack, spec: Spec) -> Call:
    plan, policy = spec
    limiter = Limiter(_client(url, stack), "bench", plan, policy, key_prefix=prefix)
    prs = [f"pr{n}" for n in range(_PR_IDS)]
    cost = plan.cost_milli("bench")
    # A plan whose cap a run can reach needs each slot back before the next call.
    release = (plan.concurrency or _NEVER_FULL) < _NEVER_FULL

    def hit(i: int) -> bool:
        res = limiter.acquire(cost, prs[i % _PR_IDS], f"{tag}.{i}", _LEASE_MS)
        if release and isinstance(res, Grant):
            limiter.release(res.lease_id)
        return res.granted

    return hit


def _evalsha_call(url: str, prefix: str, tag: str, stack: Stack, spec: Spec) -> Call:
    script = _client(url, stack).register_script("return 1")
    return lambda i: script() == 1


def _limits_call(url: str, prefix: str, tag: str, stack: Stack, spec: Spec) -> Call:
    """One window only: a moving-window item has a single limit and period."""
    from limits import RateLimitItemPerSecond
    from limits.storage import RedisStorage, storage_from_string
    from limits.strategies import MovingWindowRateLimiter

    storage = storage_from_string(url, key_prefix=f"{prefix}:limits")
    assert isinstance(storage, RedisStorage)
    stack.callback(cast(redis.Redis, storage.get_connection()).close)
    limiter = MovingWindowRateLimiter(storage)
    requests, ms = _rates(spec[0])[0]
    item = RateLimitItemPerSecond(requests, ms // 1000)
    return lambda i: bool(limiter.hit(item, "bench"))


def _pyrate_call(url: str, prefix: str, tag: str, stack: Stack, spec: Spec) -> Call:
    from pyrate_limiter import Limiter as PyrateLimiter
    from pyrate_limiter import Rate, RedisBucket

    rates = [Rate(n, ms) for n, ms in _rates(spec[0])]
    bucket = RedisBucket.init(rates, _client(url, stack), f"{prefix}:pyrate")
    limiter = PyrateLimiter(bucket)
    stack.callback(limiter.close)
    return lambda i: bool(limiter.try_acquire("bench", blocking=False))


_CALLS: dict[str, Callable[[str, str, str, Stack, Spec], Call]] = {
    "reviewq": _reviewq_call,
    "evalsha": _evalsha_call,
    "limits-moving-window": _limits_call,
    "pyrate-redis-bucket": _pyrate_call,
}


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


def _worker(job: _Job, index: int) -> dict[str, tuple[int, bytes]]:
    """One client process with every contender's client: each turn starts behind the
    barrier, so all clients run the same contender at the same moment."""
    assert _barrier is not None
    elapsed = dict.fromkeys(job.names, 0)
    lats = {name: array("q") for name in job.names}
    with contextlib.ExitStack() as stack:
        tag = f"{index}.{os.getpid()}"
        calls = {
            name: _CALLS[name](job.url, f"{job.prefix}:{name}", tag, stack, _bench_plan())
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


def _scenario(job: _Job, clients: int) -> list[Result]:
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


def _keys_under(client: redis.Redis, prefix: str) -> list[str]:
    return [k.decode() for k in client.scan_iter(match=f"{prefix}*", count=1000)]


def _memory(name: str, url: str, client: redis.Redis, prefix: str) -> int:
    """Bytes one account holds after a full 500-request 5-hour window (`synthetic`).

    Keys are found by SCAN on the account's own prefix, for us as for the peers, so a
    key our limiter wrote outside `Limiter.keys` would be counted too. SAMPLES 0 sizes
    every element, so the figure is exact rather than estimated.
    """
    plan = get_preset("synthetic")
    expected = _rates(plan)[0][0]
    with contextlib.ExitStack() as stack:
        hit = _CALLS[name](url, prefix, "mem", stack, (plan, Policy()))
        granted = 0
        while granted <= expected and hit(granted):
            granted += 1
    if granted != expected:
        raise RuntimeError(f"{name}: {granted} grants filled the window, expected {expected}")
    sizes = [client.memory_usage(k, samples=0) for k in _keys_under(client, prefix)]
    return sum(int(cast(int | None, size) or 0) for size in sizes)


def available() -> tuple[list[str], dict[str, str]]:
    """Contenders to run, and why any optional peer is left out."""
    skipped = {
        name: f"{module} is not installed (pip install 'reviewq[bench]')"
        for name, module in _PEER_MODULE.items()
        if importlib.util.find_spec(module) is None
    }
    return [n for n in NAMES if n not in skipped], skipped


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
        for result in _scenario(
            _Job(tuple(names), url, f"{prefix}:{n}", seconds, warmup, rounds), n
        )
    ]
    memory: dict[str, int] = {}
    with redis.Redis.from_url(url) as client:
        try:
            for name in names:
                if name != "evalsha":  # it keeps no state to measure
                    memory[name] = _memory(name, url, client, f"{prefix}:mem:{name}")
        finally:
            for key in _keys_under(client, prefix):
                client.unlink(key)
    return BenchReport(results, memory)


def ratio_bars(results: list[Result]) -> list[Bar]:
    """(label, ratio, bar, passed); ratio and passed are None when a contender is absent."""
    by = {(r.name, r.clients): r for r in results}

    def bar(label: str, n: int, peer: str, field: str, limit: float, at_most: bool) -> Bar:
        ours, theirs = by.get(("reviewq", n)), by.get((peer, n))
        if ours is None or theirs is None:
            return (label, None, f"{'<=' if at_most else '>='} {limit}", None)
        ratio = getattr(ours, field) / getattr(theirs, field)
        ok = ratio <= limit if at_most else ratio >= limit
        return (label, ratio, f"{'<=' if at_most else '>='} {limit}", ok)

    bars = [bar("reviewq p50 / evalsha p50 (1 client)", 1, "evalsha", "p50_us", 1.5, True)]
    for n in sorted({r.clients for r in results}):
        label = f"reviewq ops/s / limits ops/s ({n} client{'s' if n > 1 else ''})"
        bars.append(bar(label, n, "limits-moving-window", "ops_per_s", 0.9, False))
    return bars


def _table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> Table:
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="right" if 0 < i < 5 else "left")
    for row in rows:
        table.add_row(*row)
    return table


def _render(report: BenchReport, url: str, console: Console) -> None:
    title = f"reviewq bench limiter ({url}, {os.cpu_count()} CPUs)"
    columns = ("contender", "clients", "ops/s", "p50 µs", "p99 µs")
    figures = (
        (r.name, str(r.clients), f"{r.ops_per_s:,.0f}", f"{r.p50_us:.1f}", f"{r.p99_us:.1f}")
        for r in report.results
    )
    console.print(_table(title, columns, figures))
    title = "Redis memory of one account after 500 requests in a 5 h window"
    sizes = ((name, f"{size:,}") for name, size in report.memory_bytes.items())
    console.print(_table(title, ("contender", "bytes"), sizes))
    verdict = {None: "n/a", True: "[green]PASS", False: "[red]MISS"}
    bars = (
        (label, "n/a" if ratio is None else f"{ratio:.2f}", bar, verdict[ok])
        for label, ratio, bar, ok in ratio_bars(report.results)
    )
    console.print(_table("Bars", ("ratio", "value", "bar", "verdict"), bars))


@contextlib.contextmanager
def _server() -> Iterator[str]:
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


def _parse_clients(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        counts = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected counts such as 1,4, got {value!r}") from None
    if not counts or min(counts) < 1:
        raise click.BadParameter(f"expected positive counts such as 1,4, got {value!r}")
    return sorted(set(counts))


@click.group()
def bench() -> None:
    """Measure reviewq on this machine."""


@bench.command("limiter")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option("--seconds", type=click.FloatRange(0, min_open=True), default=0.25, help=_SECONDS)
@click.option("--clients", default="1,4", callback=_parse_clients, help=_CLIENTS)
@click.option("--rounds", type=click.IntRange(1, 200), default=12, help=_ROUNDS)
def limiter_command(as_json: bool, seconds: float, clients: list[int], rounds: int) -> None:
    """Acquire latency and throughput against EVALSHA and peer limiter libraries."""
    err = Console(stderr=True)
    _, skipped = available()
    for name, why in skipped.items():
        err.print(f"skipping {name}: {why}")
    try:
        with _server() as url:
            report = run_limiter_bench(url, seconds, clients, rounds=rounds)
    except (RedisServerNotFound, RedisServerStartError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report.to_json()))
    else:
        _render(report, url, Console(file=sys.stdout))


bench.add_command(webhook_command)
bench.add_command(report_command)
