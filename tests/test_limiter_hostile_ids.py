"""A PR id or request id is data, never syntax: no id can move the limiter's totals.

Regression tests for a reported attack. The Lua scripts found a charge record's cost for
a window by searching the record `t|pr|<window>=cost|...` for `|<window>=`, and the PR
id comes first: `reviewq enqueue --pr 'requests_5h=999999999'` had every settle, refund
and expiry take 999,999,999 off the window (20 of 20 grants in a window of 3), and a PR
id such as `w=1` made an expiry take off 1 instead of the charge, so the window stayed
full for good. Every test here runs the real scripts on a real Redis with a stepped
clock, and checks the totals against what was actually granted.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pytest
import redis as redis_py

from scheduler.quota.limiter import Grant, Limiter
from scheduler.quota.plans import Plan, Policy, Window

T0 = 1_800_000_000_000
HOUR = 3_600_000
LEASE_MS = 60_000

FIVE_H = Window(name="requests_5h", limit=3, duration="5h")
FIVE_H_BUCKET = Window(
    name="requests_5h", kind="regenerating", limit=3, duration="5h", tick="1h", tick_percent=20
)
WEEK = Window(name="requests_week", limit=10, duration="7d")

PLANS = {
    "rolling": (FIVE_H,),
    "regenerating": (FIVE_H_BUCKET,),
    "rolling+week": (FIVE_H, WEEK),
    "regenerating+week": (FIVE_H_BUCKET, WEEK),
}

# Text that is syntax somewhere: in the packed records ("|", "=", ","), in hash fields
# ("c:", "p:", "g", "b:r"), in Redis hash tags ("{}"), in Lua patterns and formats
# ("%", "[", "(", ".", "*", "^", "$", "-"), in JSON ('"', "\\", "/"), in C strings (NUL),
# and a long run of multi-byte characters. None may contain "|" (acquire refuses it).
HOSTILE_PRS = [
    "requests_5h=999999999",
    "requests_week=999999999",
    "requests_5h=-999999999",
    "requests_5h=1",
    "requests_5h=0,1,2",
    "=",
    "a=b=c",
    "owner/repo#12",
    "#",
    ":",
    "p:a",
    "c:r0",
    "g",
    "b:r",
    "{}",
    "{account}",
    "%",
    "%d%s%%",
    "[",
    "(",
    ".",
    "*",
    ".*",
    "^$",
    "%w+=(%-?%d+)",
    "\n",
    "a\nrequests_5h=5",
    "\t",
    "\x00",
    "a\x00b",
    '"',
    "\\",
    "null",
    "0",
    "é" * 200,
    "\U0001f642" * 200,
]
HOSTILE_RIDS = [*HOSTILE_PRS, "|", "a|b", "m1|r0", "|requests_5h=1|", "r0|requests_5h=999999999"]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def plan_of(windows: tuple[Window, ...], concurrency: int | None = None) -> Plan:
    return Plan(
        name="hostile",
        provider="test",
        windows=windows,
        concurrency=concurrency,
        concurrency_per_model=concurrency is not None,
        source="tests",
        as_of=dt.date(2026, 11, 22),
    )


@dataclass
class Ledger:
    """What was really granted, kept by the test: (grant time, PR, cost) per request."""

    windows: tuple[Window, ...]
    charges: dict[str, tuple[int, str, int]] = field(default_factory=dict)

    def used(self, window: Window, now: int) -> int:
        return sum(c for t, _, c in self.charges.values() if now < t + window.duration_ms)

    def pr_used(self, window: Window, now: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for t, pr, c in self.charges.values():
            if now < t + window.duration_ms and c:
                out[pr] = out.get(pr, 0) + c
        return out


def check(limiter: Limiter, ledger: Ledger, now: int) -> None:
    """status() matches what was granted, in every window; no total is negative."""
    status = limiter.status()
    for w, got in zip(ledger.windows, status.windows, strict=True):
        assert 0 <= got.used <= w.limit_milli, (w.name, got)
        if w.kind == "rolling":
            assert got.used == ledger.used(w, now), (w.name, got)
        assert {p: u for p, u in got.pr_used.items() if u} == ledger.pr_used(w, now), w.name


def stored_totals(client: redis_py.Redis, limiter: Limiter) -> dict[str, int]:
    """Each rolling window's stored total, read from the packed `g` field (see
    docs/limiter.md, "How it is stored"): `x|bu|<w>=v,n|<w>=v,a,n...`."""
    raw = client.hget(limiter.keys[0], "g")
    assert isinstance(raw, bytes)
    totals = {}
    for part in raw.decode().split("|")[2:]:
        name, slots = part.split("=")
        v = slots.split(",")[0]
        totals[name] = int(v) if v else 0
    return {w.name: totals[w.name] for w in limiter.plan.windows if w.kind == "rolling"}


def new_limiter(client: redis_py.Redis, unique: str, plan: Plan) -> tuple[Limiter, Clock]:
    clock = Clock()
    return Limiter(client, unique, plan, Policy(arrival_margin_ms=0), clock=clock), clock


@pytest.mark.parametrize("how", ["settle", "refund", "expire"])
@pytest.mark.parametrize("plan_name", list(PLANS))
@pytest.mark.parametrize(
    "pr",
    ["requests_5h=999999999", "requests_week=999999999", "requests_5h=-999999999", "x"],
)
def test_a_pr_id_that_reads_like_a_cost_gets_no_more_than_the_window(
    redis: redis_py.Redis, unique: str, pr: str, plan_name: str, how: str
) -> None:
    """The reported attack: 20 tries by one PR against a 3-request window. The charges
    are settled at their estimate (as after every provider call), or one is refunded,
    or the window is filled and left to expire first: at most 3 are ever live."""
    windows = PLANS[plan_name]
    limiter, clock = new_limiter(redis, unique, plan_of(windows))
    ledger = Ledger(windows)
    if how == "expire":
        for i in range(3):
            assert isinstance(limiter.acquire(1000, pr, f"fill{i}", LEASE_MS), Grant)
            ledger.charges[f"fill{i}"] = (clock.now, pr, 1000)
            clock.now += 1
        check(limiter, ledger, clock.now)
        clock.now += 6 * HOUR  # the 5h window forgets them (and its bucket refills)
        check(limiter, ledger, clock.now)
    grants = 0
    for i in range(20):
        rid = f"r{i}"
        if isinstance(limiter.acquire(1000, pr, rid, LEASE_MS), Grant):
            grants += 1
            ledger.charges[rid] = (clock.now, pr, 1000)
            if how == "settle":
                assert limiter.settle(rid, 1000)
            elif how == "refund" and grants == 1:
                assert limiter.refund(rid)
                del ledger.charges[rid]
        live = ledger.used(windows[0], clock.now) // 1000
        assert live <= 3, f"try {i + 1}: {live} grants live in a window of 3 ({grants} granted)"
        if windows[-1] is WEEK:
            assert stored_totals(redis, limiter)["requests_week"] == ledger.used(WEEK, clock.now)
        check(limiter, ledger, clock.now)
        clock.now += 1
    assert grants == (4 if how == "refund" else 3)
    assert limiter.status().windows[0].used == 3000


@pytest.mark.parametrize("bucket", [False, True], ids=["rolling", "regenerating"])
@pytest.mark.parametrize("second", [False, True], ids=["one window", "two windows"])
def test_a_pr_id_like_w_1_leaves_the_total_exact_after_expiry(
    redis: redis_py.Redis, unique: str, bucket: bool, second: bool
) -> None:
    """The related report: PR `w=1` charged 500; once that charge expired the stored
    total was 600 against a real 101, and an 899 that fits was denied for good."""
    w = Window(name="w", limit=1, duration="10s")
    if bucket:
        w = Window(
            name="w", kind="regenerating", limit=1, duration="10s", tick="10s", tick_percent=100
        )
    windows = (w, Window(name="v", limit=5, duration="1h")) if second else (w,)
    limiter, clock = new_limiter(redis, unique, plan_of(windows))
    ledger = Ledger(windows)
    for pr, rid, cost in (("w=1", "a", 500), ("v=-7", "b", 0), ("x", "c", 101)):
        assert isinstance(limiter.acquire(cost, pr, rid, LEASE_MS), Grant)
        ledger.charges[rid] = (clock.now, pr, cost)
        clock.now += 2500
    clock.now = T0 + 10_000  # "w=1"'s 500 has left w; "x"'s 101 still counts
    grant = limiter.acquire(899, "y", "d", LEASE_MS)
    assert isinstance(grant, Grant), grant
    ledger.charges["d"] = (clock.now, "y", 899)
    if not bucket:
        assert stored_totals(redis, limiter)["w"] == 1000
        assert grant.remaining["w"] == 0
    check(limiter, ledger, clock.now)
    # the trim took each PR's expired use off too: "w=1" and "v=-7" have none left in w
    p = redis.hget(limiter.keys[0], "p:w=1")
    assert p is None or p.decode().split("|")[0] == "w=0", p
    clock.now = T0 + 60_000  # everything has left w
    check(limiter, ledger, clock.now)
    assert isinstance(limiter.acquire(1000, "w=1", "e", LEASE_MS), Grant)


@pytest.mark.parametrize("pr", HOSTILE_PRS, ids=range(len(HOSTILE_PRS)))
def test_any_pr_id_round_trips_through_every_script(
    redis: redis_py.Redis, unique: str, pr: str
) -> None:
    """Charges by a hostile PR beside a plain one, on both acquire paths (the first
    charge of a window takes the general path, the next ones the generated fast path,
    with one cost or one per window), then settle, refund, status and expiry."""
    windows = (FIVE_H, FIVE_H_BUCKET.model_copy(update={"name": "bucket"}), WEEK)
    limiter, clock = new_limiter(redis, unique, plan_of(windows))
    ledger = Ledger(windows)
    steps: list[tuple[str, str, int | dict[str, int]]] = [
        ("plain", "p0", 100),
        (pr, "h0", 200),
        (pr, "h1", {"requests_5h": 300, "bucket": 50, "requests_week": 7}),
        ("plain", "p1", {"requests_5h": 1, "bucket": 2, "requests_week": 3}),
        (pr, "h2", 400),
    ]
    for who, rid, cost in steps:
        grant = limiter.acquire(cost, who, rid, LEASE_MS)
        assert isinstance(grant, Grant) and not grant.replayed, grant
        ledger.charges[rid] = (clock.now, who, cost if isinstance(cost, int) else 0)
        if not isinstance(cost, int):
            assert limiter.settle(rid, 250)  # and now the same in every window
            ledger.charges[rid] = (clock.now, who, 250)
        check(limiter, ledger, clock.now)
        clock.now += 10
    status = limiter.status()
    assert status.windows[0].pr_used == {"plain": 350, pr: 850}
    assert limiter.settle("h0", 10)
    ledger.charges["h0"] = (T0 + 10, pr, 10)
    check(limiter, ledger, clock.now)
    assert limiter.refund("h2")
    del ledger.charges["h2"]
    check(limiter, ledger, clock.now)
    assert stored_totals(redis, limiter) == {
        "requests_5h": ledger.used(FIVE_H, clock.now),
        "requests_week": ledger.used(WEEK, clock.now),
    }
    clock.now += 6 * HOUR  # gone from the 5h window and the bucket, not from the week
    assert isinstance(limiter.acquire(1000, pr, "h3", LEASE_MS), Grant)
    ledger.charges["h3"] = (clock.now, pr, 1000)
    check(limiter, ledger, clock.now)
    assert stored_totals(redis, limiter) == {
        "requests_5h": 1000,
        "requests_week": ledger.used(WEEK, clock.now),
    }
    clock.now += 8 * 24 * HOUR  # gone from every window
    check(limiter, ledger, clock.now)
    assert isinstance(limiter.acquire(3000, pr, "h4", LEASE_MS), Grant)
    assert limiter.status().windows[0].pr_used == {pr: 3000}


@pytest.mark.parametrize("rid", HOSTILE_RIDS, ids=range(len(HOSTILE_RIDS)))
def test_any_request_id_round_trips_through_every_script(
    redis: redis_py.Redis, unique: str, rid: str
) -> None:
    """A request id is a hash field (`c:<rid>`), a log member and part of its lease id
    (`<model>|<rid>`): whatever it holds, a retry is a replay, and settle, refund and
    release find exactly that request."""
    limiter, clock = new_limiter(redis, unique, plan_of((FIVE_H, WEEK), concurrency=3))
    ledger = Ledger((FIVE_H, WEEK))
    for other in ("r0", "x"):  # ids that a hostile one could be mistaken for
        assert isinstance(limiter.acquire(100, "pr", other, LEASE_MS, model="m1"), Grant)
        ledger.charges[other] = (clock.now, "pr", 100)
    first = limiter.acquire(700, "pr", rid, LEASE_MS, model="m1")
    assert isinstance(first, Grant) and not first.replayed, first
    assert first.lease_id == f"m1|{rid}"
    ledger.charges[rid] = (clock.now, "pr", 700)
    again = limiter.acquire(700, "pr", rid, LEASE_MS, model="m1")
    assert isinstance(again, Grant) and again.replayed, again
    check(limiter, ledger, clock.now)
    assert {x.lease_id for x in limiter.status().leases} == {"m1|r0", "m1|x", f"m1|{rid}"}
    assert limiter.settle(rid, 1200)
    ledger.charges[rid] = (clock.now, "pr", 1200)
    check(limiter, ledger, clock.now)
    assert limiter.release(f"m1|{rid}")
    assert {x.lease_id for x in limiter.status().leases} == {"m1|r0", "m1|x"}
    assert limiter.refund(rid)
    del ledger.charges[rid]
    check(limiter, ledger, clock.now)
    assert not limiter.settle(rid, 1)
    renewed = limiter.acquire(300, "pr", rid, LEASE_MS, model="m1")
    assert isinstance(renewed, Grant) and not renewed.replayed, renewed
    ledger.charges[rid] = (clock.now, "pr", 300)
    check(limiter, ledger, clock.now)


def test_request_ids_of_the_providers_counts_are_reserved(
    redis: redis_py.Redis, unique: str
) -> None:
    """`sync` books the provider's count as a charge `~sync:<window>:<now>:<used>`: a
    request may not take that id, or settle or refund it. Other ids may start so."""
    limiter, clock = new_limiter(redis, unique, plan_of((FIVE_H,)))
    assert limiter.sync("requests_5h", 2000, clock.now + HOUR)
    sync_id = f"~sync:requests_5h:{clock.now}:2000"
    assert redis.hexists(limiter.keys[0], f"c:{sync_id}")
    with pytest.raises(ValueError, match="reserved"):
        limiter.acquire(1000, "pr", sync_id, LEASE_MS)
    assert not limiter.settle(sync_id, 0)
    assert not limiter.refund(sync_id)
    assert limiter.status().windows[0].used == 2000
    assert isinstance(limiter.acquire(500, "pr", "~sync", LEASE_MS), Grant)
    assert isinstance(limiter.acquire(250, "~sync:x", "~sync:x|m.r0", LEASE_MS), Grant)
    assert isinstance(limiter.acquire(250, "pr", f"{sync_id}|m.r0", LEASE_MS), Grant)
    assert limiter.status().windows[0].used == 3000
