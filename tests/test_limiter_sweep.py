"""Expired leases are swept lazily; no answer may depend on when.

acquire removes expired leases only once `SWEEP_AT` leases (or the cap) are stored, so
a lease that lapsed without a release can sit in the set for a while. Every count and
listing must look past it, and the set must stay bounded.
"""

from __future__ import annotations

import datetime as dt
from typing import cast

import pytest
import redis as redis_py
from test_limiter_property import run_machine

from scheduler.quota import luagen
from scheduler.quota.limiter import Denial, Grant, Limiter
from scheduler.quota.plans import Plan, Policy

T0 = 1_800_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def plan_of(concurrency: int | None, per_model: bool = False) -> Plan:
    return Plan(
        name="sweep",
        provider="test",
        windows=(),
        concurrency=concurrency,
        concurrency_per_model=per_model,
        source="tests",
        as_of=dt.date(2026, 11, 22),
    )


@pytest.mark.parametrize(("cap", "per_model"), [(None, False), (3, False), (3, True), (500, False)])
def test_unreleased_leases_neither_count_nor_pile_up(
    redis: redis_py.Redis, unique: str, cap: int | None, per_model: bool
) -> None:
    clock = Clock()
    limiter = Limiter(redis, unique, plan_of(cap, per_model), Policy(), clock=clock)
    leases = limiter.keys[2]
    lapsed = []
    for i in range(5 * luagen.SWEEP_AT):
        result = limiter.acquire(0, "pr", f"old{i}", 10, model="m")
        assert isinstance(result, Grant)
        lapsed.append(result.lease_id)
        clock.now += 10  # each lease lapses before the next acquire, never released
        assert cast(int, redis.zcard(leases)) <= luagen.SWEEP_AT + 1
    assert limiter.status().leases == []
    if cap is not None:
        held = [limiter.acquire(0, "pr", f"new{i}", 1000, model="m") for i in range(cap)]
        assert all(isinstance(g, Grant) for g in held)
        denial = limiter.acquire(0, "pr", "one-too-many", 1000, model="m")
        assert isinstance(denial, Denial) and denial.reason == "concurrency"
        assert denial.retry_after_ms == 1000
    assert limiter.renew(lapsed[-1], 1000) is False
    assert limiter.release(lapsed[-2]) is False
    assert cast(int, redis.pttl(leases)) > 0


@pytest.mark.slow
def test_limiter_matches_model_when_every_acquire_sweeps(
    redis: redis_py.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference-model run again, with leases swept on every acquire: the answers
    must not depend on whether an expired lease is still stored."""
    monkeypatch.setattr(luagen, "SWEEP_AT", 1)
    seen = run_machine(redis, examples=300, steps=50)
    assert seen["denied: concurrency"] and seen["retried on time after: concurrency"]
    assert seen["renew -> False"] and seen["release -> False"]
