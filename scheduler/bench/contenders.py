"""The contenders of `reviewq bench limiter`: our acquire, the floor and two peers.

Each contender is a factory that connects to the server and returns a `Call`: one
acquire (or, for the floor, one bare EVALSHA) that says whether it was granted. They
all get the same plan (`bench_plan`): every call must be a grant, since a denial takes
a different path through each script, so the limits are set far above what a run can
spend.

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
from collections.abc import Callable
from typing import cast

import redis

from scheduler.quota.limiter import Grant, Limiter
from scheduler.quota.plans import MILLI, Plan, Policy, Window, get_preset, parse_duration_ms

__all__ = ["CALLS", "NAMES", "Call", "Spec", "available", "bench_plan", "keys_under", "memory"]

NAMES = ("reviewq", "evalsha", "limits-moving-window", "pyrate-redis-bucket")
_PEER_MODULE = {"limits-moving-window": "limits", "pyrate-redis-bucket": "pyrate_limiter"}
_HUGE = 10**9  # requests per window: no run can spend it, so every call is a grant
_LEASE_MS = 1  # see the module docstring: keeps the lease set production-sized
_NEVER_FULL = 10**6
_PR_IDS = 997

Call = Callable[[int], bool]
Spec = tuple[Plan, Policy]
Stack = contextlib.ExitStack


def bench_plan() -> Spec:
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


CALLS: dict[str, Callable[[str, str, str, Stack, Spec], Call]] = {
    "reviewq": _reviewq_call,
    "evalsha": _evalsha_call,
    "limits-moving-window": _limits_call,
    "pyrate-redis-bucket": _pyrate_call,
}


def available() -> tuple[list[str], dict[str, str]]:
    """Contenders to run, and why any optional peer is left out."""
    skipped = {
        name: f"{module} is not installed (pip install 'reviewq[bench]')"
        for name, module in _PEER_MODULE.items()
        if importlib.util.find_spec(module) is None
    }
    return [n for n in NAMES if n not in skipped], skipped


def keys_under(client: redis.Redis, prefix: str) -> list[str]:
    return [k.decode() for k in client.scan_iter(match=f"{prefix}*", count=1000)]


def memory(name: str, url: str, client: redis.Redis, prefix: str) -> int:
    """Bytes one account holds after a full 500-request 5-hour window (`synthetic`).

    Keys are found by SCAN on the account's own prefix, for us as for the peers, so a
    key our limiter wrote outside `Limiter.keys` would be counted too. SAMPLES 0 sizes
    every element, so the figure is exact rather than estimated.
    """
    plan = get_preset("synthetic")
    expected = _rates(plan)[0][0]
    with contextlib.ExitStack() as stack:
        hit = CALLS[name](url, prefix, "mem", stack, (plan, Policy()))
        granted = 0
        while granted <= expected and hit(granted):
            granted += 1
    if granted != expected:
        raise RuntimeError(f"{name}: {granted} grants filled the window, expected {expected}")
    sizes = [client.memory_usage(k, samples=0) for k in keys_under(client, prefix)]
    return sum(int(cast(int | None, size) or 0) for size in sizes)
