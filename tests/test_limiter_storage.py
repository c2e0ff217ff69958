"""The packed account state survives a plan edit the way per-window keys would.

An account's window totals and PR uses are stored per window name, so a plan that
gains, loses or reorders windows keeps what it knew about the windows it still has.
"""

from __future__ import annotations

import datetime as dt

import redis as redis_py

from scheduler.quota.limiter import Denial, Grant, Limiter
from scheduler.quota.plans import Plan, Policy, Window

T0 = 1_800_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def plan_of(*windows: Window) -> Plan:
    return Plan(
        name="edit",
        provider="test",
        windows=windows,
        source="tests",
        as_of=dt.date(2026, 11, 22),
    )


SHORT = Window(name="short", limit=10, duration="1h")
LONG = Window(name="long", limit=50, duration="1d")
BUCKET = Window(
    name="bucket", limit=20, duration="2h", kind="regenerating", tick="10m", tick_percent=10
)


def test_a_plan_edit_keeps_the_windows_it_still_has(redis: redis_py.Redis, unique: str) -> None:
    clock = Clock()
    policy = Policy(pr_share=0.3, reserve=0.5, arrival_margin_ms=0)  # share 3 of 10 in short
    before = Limiter(redis, unique, plan_of(SHORT, BUCKET), policy, clock=clock)
    for i in range(3):
        assert isinstance(before.acquire(1000, "pr", f"a{i}", 1000), Grant)
    clock.now += 1000
    after = Limiter(redis, unique, plan_of(LONG, BUCKET, SHORT), policy, clock=clock)
    used = {w.name: w.used for w in after.status().windows}
    assert used == {"long": 0, "bucket": 3000, "short": 3000}
    grant = after.acquire(1000, "pr", "b", 1000)
    assert isinstance(grant, Grant)
    assert grant.remaining == {"long": 49_000, "bucket": 16_000, "short": 6000}
    # "pr" is over its share in short (3 of 10), so it may only fill up to lo (5 of 10):
    # its use came along with the totals.
    assert isinstance(after.acquire(1000, "pr", "c", 1000), Grant)
    denial = after.acquire(1000, "pr", "d", 1000)
    assert isinstance(denial, Denial) and denial.window == "short"
    clock.now += 3_600_000  # short forgets all five charges, the bucket has refilled
    used = {w.name: w.used for w in after.status().windows}
    assert used == {"long": 2000, "bucket": 0, "short": 0}
    assert isinstance(after.acquire(5000, "pr", "e", 1000), Grant)
