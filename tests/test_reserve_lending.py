"""Lending the adaptive reserve in amounts that come back in time (docs/reserve.md,
"Lent where it comes back in time"): the arithmetic by hand-computed rows, the
limiter's `leaving` read against a real Redis, and the controller putting it in force.

The reference figures here are written from the docs' rule, by hand: none of them is
computed with the code under test."""

from __future__ import annotations

import datetime as dt

import pytest
import redis as redis_py

from scheduler.admission import Admission, Fairness
from scheduler.cli.inspect_view import _reserve as _reserve_cell
from scheduler.ops.snapshots import WindowView
from scheduler.quota.limiter import Grant, Limiter
from scheduler.quota.plans import Account, AdaptiveReserve, Plan, Policy, Window
from scheduler.quota.reserve import Bursts, Demand, PrDemand, lend_until, size_reserve
from scheduler.state.jobs import review_queue
from scheduler.waker.reserve import ReserveController

H = 3_600_000
M = 60_000


def test_lend_until_is_the_due_burst_else_the_bound() -> None:
    """Due ahead: by then. No due time (one burst seen) or the due one late: within
    the bound, and with no bound nothing is lent; no burst seen, nothing to lend."""
    assert lend_until(None, 8 * H, 3 * H) is None
    assert lend_until(Bursts(11 * H, 19 * H), 12 * H, 3 * H) == 19 * H
    assert lend_until(Bursts(11 * H, 19 * H), 12 * H, 0) == 19 * H
    assert lend_until(Bursts(3 * H, None), 8 * H, 3 * H) == 11 * H
    assert lend_until(Bursts(3 * H, None), 8 * H, 0) is None
    assert lend_until(Bursts(11 * H, 19 * H), 19 * H, 3 * H) == 22 * H  # late: the bound
    assert lend_until(Bursts(11 * H, 19 * H), 20 * H, 0) is None


def _done(arrived: int) -> PrDemand:
    return PrDemand(arrived, {"w": 1_000}, {"w": 1_000}, False)


BURST = [_done(3 * H), _done(3 * H + 10 * M), _done(3 * H + 20 * M), _done(3 * H + 30 * M)]


AFTER_3H = Bursts(3 * H, None)  # one burst seen, from 3 h: none due


def _open(arrived: int) -> PrDemand:
    return PrDemand(arrived, {"w": 1_000}, {}, True)


def _size(
    prs: list[PrDemand],
    now: int,
    back_by: int | None,
    leaving: int = 0,
    *,
    window_ms: int = 5 * H,
    seen: Bursts = AFTER_3H,
    interval_ms: int = M,
) -> Demand:
    """One window's demand at `now` (share 8,000, no bounds that bite, horizon 24 h,
    span 5 h); by default a 5 h window, a minute's interval and the last burst seen
    starting at 3 h with none due."""
    return size_reserve(
        prs,
        now,
        "w",
        8_000,
        (0, 9**9),
        24 * H,
        5 * H,
        window_ms=window_ms,
        seen=seen,
        back_by=back_by,
        leaving=leaving,
        interval_ms=interval_ms,
    )


def _at(prs: list[PrDemand], leaving: int, back_by: int | None) -> int:
    return _size(prs, 8 * H, back_by, leaving).reserve


def test_a_burst_is_lent_only_where_it_comes_back_in_time() -> None:
    """The 11 h burst (two 1-request PRs) served; the next due at 19 h. A 5 h window
    lends the next burst's room until 14 h (a unit spent then is back at 19 h), a 24 h
    one never; the queued work is held either way, and so is what the burst under way
    may still bring: with one of two arrived, one more. (No interval here: whole
    lending with one is `test_whole_lending_counts_the_interval`.)"""
    served = [_done(11 * H), _done(11 * H)]
    seen = Bursts(11 * H, 19 * H)

    def at(now: int, window_ms: int, prs: list[PrDemand] = served) -> Demand:
        back_by = lend_until(seen, now, 0)
        return _size(prs, now, back_by, window_ms=window_ms, seen=seen, interval_ms=0)

    assert (at(12 * H, 5 * H).reserve, at(12 * H, 5 * H).lent) == (0, True)
    assert at(14 * H, 5 * H).lent and not at(14 * H + 1, 5 * H).lent
    assert at(14 * H + 1, 5 * H).reserve == 2_000
    assert (at(12 * H, 24 * H).reserve, at(12 * H, 24 * H).lent) == (2_000, False)
    waiting = [*served, _open(12 * H)]
    assert at(12 * H, 5 * H, waiting).reserve == 1_000  # lent, the queued still held
    earlier = [_done(3 * H), _done(3 * H)]
    half = [*earlier, _done(11 * H)]  # 1 of a 2-request burst so far
    assert at(12 * H, 5 * H, half).reserve == 1_000


def test_partial_lending_by_hand() -> None:
    """A burst of four 1-request PRs at 3 h, served; at 8 h room must be back by 11 h.
    A unit spent at 8 h is back at 13 h, too late, so the burst's 4,000 are held less
    what leaves the window by 11 h anyway: 20,000 leaving, nothing held; 3,000, 1,000
    held; none, all 4,000, as without lending."""
    assert _at(BURST, 20_000, 11 * H) == 0
    assert _at(BURST, 3_000, 11 * H) == 1_000
    assert _at(BURST, 0, 11 * H) == 4_000
    assert _at(BURST, 20_000, None) == 4_000  # nothing to be back by: nothing lent


def test_what_is_needed_now_is_never_lent() -> None:
    """Two of the burst still open (2,000 queued): they need their room now, whatever
    leaves by 11 h; 1,000 leaving would hold 2,000 + 3,000, more than the 4,000
    held without lending, so 4,000."""
    open_two = [*BURST[:2], _open(3 * H + 20 * M), _open(3 * H + 30 * M)]
    assert _at(open_two, 20_000, 11 * H) == 2_000
    assert _at(open_two, 1_000, 11 * H) == 4_000


def test_the_rest_of_a_burst_under_way_is_held() -> None:
    """A burst of four at -2 h, and a new one from 3 h: at 3 h 15 two of it have
    come. The largest burst is 4,000, so the two that may still come are held now,
    whatever leaves the window later."""
    earlier = [_done(-2 * H + i * 10 * M) for i in range(4)]
    prs = [*earlier, *BURST[:2]]
    got = _size(prs, 3 * H + 15 * M, 6 * H, 20_000)
    assert (got.recent, got.reserve, got.leaving) == (4_000, 2_000, 20_000)


def test_whole_lending_counts_the_interval() -> None:
    """Lent whole only if a unit spent any time before the next sizing is back in
    time: by 13 h 01 at 8 h with a minute's interval, not by 13 h."""
    whole = _size(BURST, 8 * H, 13 * H + M)
    assert (whole.reserve, whole.lent) == (0, True)
    late = _size(BURST, 8 * H, 13 * H)
    assert (late.reserve, late.lent) == (4_000, False)


def test_lend_within_is_a_duration() -> None:
    assert AdaptiveReserve(lend_within="3h").lend_within_ms == 3 * H  # type: ignore[call-arg]
    assert AdaptiveReserve().lend_within_ms == 0
    assert AdaptiveReserve(lend_within="3h").scaled(600).lend_within_ms == 18_000  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="lend_within"):
        AdaptiveReserve(lend_within="soon")  # type: ignore[call-arg]


# ------------------------------------------------------------ against a real Redis


def _plan(*, bucket: bool = False) -> Plan:
    windows = [
        Window(name="w5h", limit=24, duration="5h"),
        Window(name="w24h", limit=80, duration="24h"),
    ]
    if bucket:
        windows.append(
            Window(
                name="b",
                kind="regenerating",
                limit=10,
                duration="5h",
                tick="1h",
                tick_percent=20,
            )
        )
    return Plan(
        name="two",
        provider="test",
        windows=tuple(windows),
        concurrency=None,
        source="test",
        as_of=dt.date(2026, 12, 7),
    )


class Clock:
    def __init__(self) -> None:
        self.ms = 1_800_000_000_000

    def __call__(self) -> int:
        return self.ms


def _charge(lim: Limiter, clock: Clock, at: int, cost: int, rid: str) -> None:
    clock.ms = START + at
    got = lim.acquire(cost, "o/big#1", rid, 1_000)
    assert isinstance(got, Grant), got
    assert lim.release(got.lease_id)


START = Clock().ms


def test_leaving_reads_what_leaves_by_then(redis: redis_py.Redis, unique: str) -> None:
    """Charges of 1, 2 and 1 requests at 0 h, 1 h and 4 h. At 4 h 30, by 6 h 30 the
    5 h window loses what was granted by 1 h 30: 1 + 2 = 3,000; with a 40 minute
    interval, the 0 h charge leaves before the next sizing (5 h < 5 h 10) and is not
    counted: 2,000. The 24 h window loses nothing by then; a window not asked, nothing."""
    clock = Clock()
    lim = Limiter(redis, unique, _plan(), Policy(arrival_margin_ms=0), clock=clock)
    for at, cost, rid in ((0, 1_000, "a"), (H, 2_000, "b"), (4 * H, 1_000, "c")):
        _charge(lim, clock, at, cost, rid)
    clock.ms = START + 4 * H + 30 * M
    by = START + 6 * H + 30 * M
    assert lim.leaving({"w5h": by, "w24h": by}) == {"w5h": 3_000, "w24h": 0}
    assert lim.leaving({"w5h": by, "w24h": by}, 40 * M) == {"w5h": 2_000, "w24h": 0}
    assert lim.leaving({"w24h": START + 25 * H}) == {"w5h": 0, "w24h": 3_000}
    late = lim.leaving({"w5h": by}, now_ms=START + 5 * H + 30 * M)  # the caller's now
    assert late == {"w5h": 2_000, "w24h": 0}


def test_leaving_margin_and_buckets(redis: redis_py.Redis, unique: str) -> None:
    """With an arrival margin a charge leaves a margin later, so it is lent only then;
    a regenerating window has no charges that leave: 0."""
    clock = Clock()
    policy = Policy(arrival_margin_ms=1_000)
    lim = Limiter(redis, unique, _plan(bucket=True), policy, clock=clock)
    _charge(lim, clock, 0, 1_000, "a")
    clock.ms = START + H
    assert lim.leaving({"w5h": START + 5 * H}) == {"w5h": 0, "w24h": 0, "b": 0}
    got = lim.leaving({"w5h": START + 5 * H + 1_000, "b": START + 9 * H})
    assert got == {"w5h": 1_000, "w24h": 0, "b": 0}


# ------------------------------------------------------------ the controller


def _account(unique: str, policy: Policy) -> Account:
    return Account(
        name=f"acct-{unique}",
        provider="synthetic",
        base_url="http://127.0.0.1:1",
        api_key_env="NO_KEY",
        plan=_plan(),
        policy=policy,
    )


def test_the_controller_lends_what_comes_back_in_time(redis: redis_py.Redis, unique: str) -> None:
    """A burst of four served, one large PR's 4 requests charged just after. With
    `lend_within` 3 h and no next burst due: at +1 h nothing of the charges leaves the
    5 h window by +4 h, so the burst's 4 requests are held; at +2 h 30 all leave by
    +5 h 30 (and not before the next sizing), so none is; the 24 h window holds it
    throughout. The demand says why."""
    adm = Admission(
        redis, review_queue(f"q-{unique}", redis), prefix=f"t:{unique}", fairness=Fairness()
    )
    adaptive = AdaptiveReserve(floor=0.0, horizon_ms=24 * H, interval_ms=M, lend_within_ms=3 * H)
    policy = Policy(pr_share=0.1, reserve=0.2, arrival_margin_ms=0, adaptive=adaptive)
    ctl = ReserveController.for_accounts(
        adm, [_account(unique, policy)], key_prefix=f"rt:{unique}", keep=5
    )
    assert ctl is not None
    lim = ctl.limiters[0]
    for i in range(4):
        adm.submit(f"o/r#{i}", "s", ["a"], files=1, plan={}, estimate={"w5h": 1000})
        adm.redis.hset(adm.keys.meta(f"o/r#{i}"), "status", "done")
    for i in range(4):
        assert isinstance(lim.acquire(1_000, "o/big#1", f"big{i}", 1_000, large=True), Grant)
    now = adm.now_ms()
    ctl.size(lim, ctl._recent_prs(now + H, 24 * H), now + H)
    assert _in_force(lim) == {"w5h": 4_000, "w24h": 4_000}
    later = now + 2 * H + 30 * M
    ctl.size(lim, ctl._recent_prs(later, 24 * H), later)
    assert _in_force(lim) == {"w5h": 0, "w24h": 4_000}
    demand = lim.status().reserve_demand
    assert demand is not None and demand["back_by_ms"] == later + 3 * H
    assert demand["windows"]["w5h"]["leaving"] == 4_000
    assert demand["windows"]["w24h"]["leaving"] == 0


def _in_force(lim: Limiter) -> dict[str, int]:
    return {w.name: w.reserve for w in lim.status().windows}


def _view(demand: dict[str, int]) -> WindowView:
    return WindowView(
        name="w5h",
        kind="rolling",
        unit="requests",
        used_milli=20_000,
        limit_milli=24_000,
        spendable_milli=24_000,
        free_milli=4_000,
        percent=83.3,
        next_free_at_ms=None,
        next_free_in_ms=None,
        reserve_milli=1_000,
        reserve_adaptive=True,
        reserve_demand=demand,
    )


def test_inspect_says_what_is_lent() -> None:
    """The table's reserve cell: lent whole, lent in part (what leaves in time), or
    held."""
    base = {"recent": 4_000, "queued": 0, "lent": 0, "leaving": 0}
    assert _reserve_cell(_view({**base, "lent": 1})).endswith("(burst lent)")
    assert _reserve_cell(_view({**base, "leaving": 3_000})).endswith(
        "adaptive: burst 4, queued 0 (3 leave in time)"
    )
    assert _reserve_cell(_view(base)).endswith("adaptive: burst 4, queued 0")
