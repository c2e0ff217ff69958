"""The adaptive reserve (docs/reserve.md): its arithmetic by hand-computed rows, and the
controller the waker runs, against a real Redis, admission and the Lua limiter."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import redis as redis_py
from pydantic import ValidationError

from scheduler.admission import Admission, Fairness
from scheduler.quota.limiter import Denial, Grant, Limiter
from scheduler.quota.plans import Account, AdaptiveReserve, Plan, Policy, Window
from scheduler.quota.reserve import (
    Bursts,
    PrDemand,
    bursts,
    reserve_milli,
    size_reserve,
)
from scheduler.state.jobs import review_queue
from scheduler.waker import Waker
from scheduler.waker.reserve import ReserveController

H = 3_600_000


# ------------------------------------------------------------------ the arithmetic


@pytest.mark.parametrize(
    ("limit", "headroom", "fraction", "want"),
    [
        (80_000, 0.0, 0.2, 16_000),  # 80 requests, a fifth
        (700, 0.0, 0.3, 210),  # 700 - 490 (floats: 700 - floor(489.99999999999994))
        (1001, 0.1, 0.25, 250),  # floor(900.9) - floor(650.65) = 900 - 650
        (500_000, 0.1, 0.0, 0),
        (333, 0.25, 0.05, 16),  # floor(249.75) - floor(233.1) = 249 - 233
    ],
)
def test_reserve_milli_is_the_gap_a_fixed_reserve_leaves(
    limit: int, headroom: float, fraction: float, want: int
) -> None:
    hi, lo, _ = Policy(headroom=headroom, reserve=fraction).caps(limit)
    assert reserve_milli(limit, headroom, fraction) == hi - lo == want


def _pr(arrived: int, est: int, used: int = 0, *, open_: bool = True) -> PrDemand:
    return PrDemand(arrived, {"w": est}, {"w": used}, open_)


def test_size_reserve_by_hand() -> None:
    """share 8,000; horizon 10 h; span (the shortest window) 2 h; now 10 h. Arrivals
    within the horizon: 2,000 at 3 h and 1,000 at 4 h (one burst: 3,000), then 3,000
    at 8 h and 2,000 at 9 h 30 (another: 5,000, the largest); 2,000 at -1 h is past the
    horizon. Open: the 8 h one, 1,000 of 3,000 spent (2,000 queued); the 9 h 30 one
    (2,000 queued). The reserve: the larger of the burst and the queued work, 5,000."""
    prs = [
        _pr(3 * H, 2_000, open_=False),
        _pr(4 * H, 1_000, open_=False),
        _pr(8 * H, 3_000, 1_000),
        _pr(9 * H + H // 2, 2_000),
        _pr(-1 * H, 2_000, open_=False),
    ]
    d = size_reserve(prs, 10 * H, "w", 8_000, (0, 64_000), 10 * H, 2 * H)
    assert (d.recent, d.queued, d.reserve, d.lent) == (5_000, 4_000, 5_000, False)
    assert size_reserve(prs, 10 * H, "w", 8_000, (0, 4_500), 10 * H, 2 * H).reserve == 4_500
    assert size_reserve([], 10 * H, "w", 8_000, (1_600, 10_000), 10 * H, 2 * H).reserve == 1_600
    more = [*prs, _pr(9 * H, 8_000)]  # 8,000 more queued, and in the last burst
    got = size_reserve(more, 10 * H, "w", 8_000, (0, 64_000), 10 * H, 2 * H)
    assert (got.recent, got.queued, got.reserve) == (13_000, 12_000, 13_000)
    old = [_pr(-5 * H, 3_000)]  # open since before the horizon: queued decides
    got = size_reserve(old, 10 * H, "w", 8_000, (0, 64_000), 10 * H, 2 * H)
    assert (got.recent, got.queued, got.reserve) == (0, 3_000, 3_000)
    # a span of 1 h splits the second burst (8 h and 9 h 30): 3,000 is the largest
    assert size_reserve(prs, 10 * H, "w", 8_000, (0, 64_000), 10 * H, H).recent == 3_000
    # exactly a span apart is apart: (t - span, t]
    apart = [_pr(0, 1_000, open_=False), _pr(2 * H, 1_000, open_=False)]
    assert size_reserve(apart, 3 * H, "w", 8_000, (0, 9**9), 10 * H, 2 * H).recent == 1_000
    at_share = [_pr(9 * H, 8_000, open_=False), _pr(9 * H, 80_000, open_=False)]
    got = size_reserve(at_share, 10 * H, "w", 8_000, (0, 9**9), 10 * H, 2 * H)
    assert got.recent == 16_000  # each counts its work under its share, at most 8,000


def test_the_next_burst_is_due_a_shortest_gap_after_the_last() -> None:
    """Bursts start at an arrival a span (5 h) or more after the one before: 3 h and
    11 h here, so the next is due at 19 h. One burst, or a steady stream, says nothing."""
    m = 60_000
    times = [3 * H, 3 * H + 10 * m, 11 * H, 11 * H + 10 * m]
    assert bursts(times, 12 * H, 24 * H, 5 * H) == Bursts(11 * H, 19 * H)
    assert bursts(times[:2], 12 * H, 24 * H, 5 * H) == Bursts(3 * H, None)
    stream = [i * 10 * m for i in range(60)]
    assert bursts(stream, 10 * H, 24 * H, 5 * H) == Bursts(0, None)
    assert bursts([0, 5 * H], 6 * H, 24 * H, 5 * H) == Bursts(5 * H, 10 * H)  # a span: new
    assert bursts(times, 12 * H, 8 * H, 5 * H) == Bursts(11 * H, None)  # 3 h: past horizon
    three = [0, 9 * H, 15 * H]  # gaps 9 h and 6 h: the shortest
    assert bursts(three, 16 * H, 24 * H, 5 * H) == Bursts(15 * H, 21 * H)
    assert bursts([], 16 * H, 24 * H, 5 * H) is None


def test_an_open_pr_over_its_share_adds_nothing_queued() -> None:
    d = size_reserve([_pr(0, 40_000, 9_000)], 20 * H, "w", 8_000, (0, 64_000), 10 * H, H)
    assert (d.recent, d.queued, d.reserve) == (0, 0, 0)


def test_a_window_without_an_estimate_takes_the_largest() -> None:
    pr = PrDemand(0, {"other": 3_000, "more": 5_000}, {}, True)
    assert size_reserve([pr], 0, "w", 8_000, (0, 64_000), H, H).queued == 5_000


def test_policy_bounds_and_validation() -> None:
    p = Policy(reserve=0.2, adaptive=AdaptiveReserve(floor=0.05))
    assert p.reserve_bounds(80_000) == (4_000, 16_000)  # ceiling: the fixed reserve
    p = Policy(reserve=0.2, adaptive={"floor": 0.0, "ceiling": 0.3, "horizon": "2h"})
    assert p.reserve_bounds(80_000) == (0, 24_000)
    assert p.adaptive is not None and p.adaptive.horizon_ms == 2 * H
    with pytest.raises(ValidationError, match="ceiling"):
        AdaptiveReserve(floor=0.3, ceiling=0.2)
    with pytest.raises(ValidationError, match="must stay below 1"):
        Policy(headroom=0.5, reserve=0.1, adaptive={"ceiling": 0.5})
    with pytest.raises(ValidationError, match="horizon"):
        AdaptiveReserve.model_validate({"horizon": "soon"})
    assert Policy().adaptive is None  # without it: today's fixed reserve


# ------------------------------------------------------------ against a real Redis


def _account(unique: str, policy: Policy) -> Account:
    plan = Plan(
        name="two",
        provider="test",
        windows=(
            Window(name="w5h", limit=24, duration="5h"),
            Window(name="w24h", limit=80, duration="24h"),
        ),
        concurrency=None,
        source="test",
        as_of=dt.date(2026, 12, 7),
    )
    return Account(
        name=f"acct-{unique}",
        provider="synthetic",
        base_url="http://127.0.0.1:1",
        api_key_env="NO_KEY",
        plan=plan,
        policy=policy,
    )


ADAPTIVE = Policy(
    pr_share=0.1,
    reserve=0.2,
    arrival_margin_ms=0,
    adaptive=AdaptiveReserve(floor=0.05, horizon_ms=5 * H, interval_ms=60_000),
)


@pytest.fixture
def adm(redis: redis_py.Redis, unique: str) -> Admission:
    return Admission(
        redis, review_queue(f"q-{unique}", redis), prefix=f"t:{unique}", fairness=Fairness()
    )


def _controller(adm: Admission, unique: str, policy: Policy = ADAPTIVE) -> ReserveController:
    ctl = ReserveController.for_accounts(
        adm, [_account(unique, policy)], key_prefix=f"rt:{unique}", keep=5
    )
    assert ctl is not None
    return ctl


def test_no_adaptive_account_no_controller(adm: Admission, unique: str) -> None:
    fixed = Policy(reserve=0.2)
    assert ReserveController.for_accounts(adm, [_account(unique, fixed)]) is None


def test_quiet_then_a_small_pr_then_served(adm: Admission, unique: str) -> None:
    """No PRs: the floor (5 % of 24 and of 80 requests). A 2-message PR estimated at 2
    requests per window: a burst of 2 and 2 queued, 2 in force; once it has spent 1
    request, 1 queued and the burst's 2 still held. Status and history show each."""
    ctl = _controller(adm, unique)
    lim = ctl.limiters[0]
    now = adm.now_ms()
    assert ctl.step(now) == 1
    assert _in_force(lim) == {"w5h": 1_200, "w24h": 4_000}
    adm.submit("o/r#1", "sha1", ["a", "b"], files=2, plan={}, estimate={"w5h": 2000, "w24h": 2000})
    assert ctl.step(now + 1) == 0, "not due before the interval"
    t1 = now + 60_000
    ctl.step(t1)
    first = 2_000
    assert _in_force(lim) == {"w5h": first, "w24h": 4_000}  # the 24 h floor is as high
    demand = lim.status().reserve_demand
    assert demand is not None and demand["windows"]["w5h"] == {
        "recent": 2_000,
        "queued": 2_000,
        "reserve": first,
        "lent": 0,
        "leaving": 0,
    }
    assert demand["next_burst_ms"] is None  # one burst seen: none is due
    assert isinstance(lim.acquire(1000, "o/r#1", "r1", 1000), Grant)
    t2 = t1 + 60_000
    ctl.step(t2)
    assert _in_force(lim)["w5h"] == first
    demand = lim.status().reserve_demand
    assert demand is not None and demand["windows"]["w5h"]["queued"] == 1_000
    history = lim.reserve_history()
    assert [v["w5h"] for _, v in history] == [1_200, first]  # unchanged: no entry


def test_the_acquire_honours_the_reserve_in_force(adm: Admission, unique: str) -> None:
    """24 requests a 5 h window, share 2.4: a big PR that has spent its share may take
    up to 24 - 4.8 = 19.2 under the fixed reserve. Lowered to 0, it takes the whole
    window; raised to 10, it is refused for `reserve` above 14, while a fresh PR still
    gets the rest. The fast path (a charge already counted) and the general path both."""
    lim = _controller(adm, unique).limiters[0]
    for i in range(19):
        assert isinstance(lim.acquire(1000, "big", f"b{i}", 1000), Grant), i
    refused = lim.acquire(1000, "big", "b19", 1000)
    assert isinstance(refused, Denial) and refused.reason.value == "reserve"
    lim.set_reserve({"w5h": 0, "w24h": 0})
    for i in range(19, 24):
        assert isinstance(lim.acquire(1000, "big", f"b{i}", 1000), Grant), i
    lim2 = Limiter(lim.redis, _account(unique + "b", ADAPTIVE), key_prefix="rt2")
    for i in range(14):
        assert isinstance(lim2.acquire(1000, "big", f"c{i}", 1000), Grant), i
    lim2.set_reserve({"w5h": 10_000, "w24h": 16_000})
    refused = lim2.acquire(1000, "big", "c14", 1000)
    assert isinstance(refused, Denial) and refused.reason.value == "reserve"
    assert refused.window == "w5h"
    assert isinstance(lim2.acquire(1000, "small", "s1", 1000), Grant)


def test_the_reserve_is_read_by_window_name(redis: redis_py.Redis, unique: str) -> None:
    """A plan whose windows were reordered still reads each window's reserve (the fast
    path's pattern no longer matches; the general path finds them by name)."""
    lim = Limiter(redis, _account(unique, ADAPTIVE), key_prefix="rt3")
    lim.set_reserve({"w5h": 24_000, "w24h": 0})
    plan = lim.plan.model_copy(update={"windows": tuple(reversed(lim.plan.windows))})
    again = Limiter(redis, lim.account, plan, ADAPTIVE, key_prefix="rt3")
    assert {w.name: w.reserve for w in again.status().windows} == {"w5h": 24_000, "w24h": 0}
    for i in range(3):  # up to its share (2.4 in w5h) a PR is under the reserve's reach
        got = again.acquire(800, "big", f"r{i}", 1000)
        assert isinstance(got, Grant), (i, got)
    # Over its share with nothing left outside the reserve: the wait is the PR's own
    # charges leaving (pr_share); under the plan's fixed reserve it would be granted.
    refused = again.acquire(800, "big", "r3", 1000)
    assert isinstance(refused, Denial) and refused.reason.value == "pr_share", refused
    assert refused.window == "w5h"


def test_set_reserve_clamps_trims_history_and_sets_a_ttl(
    redis: redis_py.Redis, unique: str
) -> None:
    lim = Limiter(redis, _account(unique, ADAPTIVE), key_prefix="rt4")
    lim.set_reserve({"w5h": 10**12}, "{}", keep=3)
    assert redis.hget(lim.keys[0], "rv") == b"w5h=24000|w24h=0"
    assert redis.pttl(lim.keys[0]) > 0
    lim.set_reserve({"w5h": 10**12}, "{}", keep=3)  # no change: no history entry
    for m in (1, 2, 3):
        lim.set_reserve({"w5h": m}, "{}", keep=3)
    assert [v["w5h"] for _, v in lim.reserve_history()] == [1, 2, 3]
    assert redis.pttl(lim.reserve_key) > 0
    for bad in ({"nope": 1}, {"w5h": -1}):
        with pytest.raises(ValueError):
            lim.set_reserve(bad)


def test_the_waker_sizes_the_reserve(adm: Admission, unique: str) -> None:
    ctl = _controller(adm, unique)
    waker = Waker(adm, reserve=ctl)
    adm.submit("o/r#2", "sha2", ["a"], files=1, plan={}, estimate={"w5h": 2000, "w24h": 2000})
    waker.step(block=False)
    assert _in_force(ctl.limiters[0]) == {"w5h": 2_000, "w24h": 4_000}  # w24h: its floor
    raw = adm.redis.hget(ctl.limiters[0].keys[0], "rd")
    assert raw is not None and json.loads(raw)["windows"]["w24h"]["recent"] == 2000


def test_a_burst_is_remembered_then_lent_back(adm: Admission, unique: str) -> None:
    """Four one-request PRs, served: with no next burst due (one burst seen), the
    reserve holds a whole burst while the horizon (here 24 h) remembers it, and the
    floor once it forgets."""
    policy = ADAPTIVE.model_copy(
        update={"adaptive": AdaptiveReserve(floor=0.05, horizon_ms=24 * H)}
    )
    ctl = _controller(adm, unique, policy)
    for i in range(4):
        adm.submit(f"o/r#{i}", "s", ["a"], files=1, plan={}, estimate={"w5h": 1000})
        adm.redis.hset(adm.keys.meta(f"o/r#{i}"), "status", "done")
    now = adm.now_ms()
    for at, want in ((0, 4_000), (12 * H, 4_000), (24 * H - 60_000, 4_000), (24 * H, 1_200)):
        ctl.step(now + at)
        assert _in_force(ctl.limiters[0])["w5h"] == want, at / H


def _in_force(lim: Limiter) -> dict[str, int]:
    status = lim.status()
    assert all(w.reserve_adaptive for w in status.windows)
    return {w.name: w.reserve for w in status.windows}


def test_a_large_pr_is_no_demand_on_the_reserve(adm: Admission, unique: str) -> None:
    """A PR estimated above its share (2.4 of w5h's 24) never spends the reserve, so
    it is no demand on it: only the small PR's request counts, recent and queued."""
    ctl = _controller(adm, unique)
    adm.submit("o/r#big", "s1", ["a"] * 30, files=30, plan={}, estimate={"w5h": 30_000})
    adm.submit("o/r#small", "s2", ["a"], files=1, plan={}, estimate={"w5h": 1000})
    now = adm.now_ms()
    ctl.step(now)
    demand = ctl.last[ctl.limiters[0].account]["w5h"]
    assert (demand.recent, demand.queued) == (1000, 1000)


def test_which_prs_are_large() -> None:
    """Large: the estimate exceeds the share in some window (a window it did not
    estimate takes its largest), and only under an adaptive reserve."""
    lim = Limiter.__new__(Limiter)  # is_large reads only the plan and the policy
    lim.plan, lim.policy = _account("x", ADAPTIVE).plan, ADAPTIVE
    assert lim.is_large({"w5h": 2_401}) and lim.is_large({"w24h": 8_001})
    assert lim.is_large({"w24h": 3_000}), "w5h not estimated: its share is 2,400"
    assert not lim.is_large({"w5h": 2_400, "w24h": 2_400})
    assert not lim.is_large({}), "no estimate says nothing"
    lim.policy = Policy(pr_share=0.1, reserve=0.2)
    assert not lim.is_large({"w5h": 30_000}), "a fixed reserve keeps the share rule"


def test_a_large_pr_is_stopped_at_the_line_from_its_first_request(
    redis: redis_py.Redis, unique: str
) -> None:
    """19 requests spent by others (the line is 24 - 4.8 = 19.2 under the fixed
    reserve): a fresh PR under its share may still take the reserve, a large one may
    not, and its retry is the line's wait (`reserve`), never its own use's."""
    lim = Limiter(redis, _account(unique, ADAPTIVE), key_prefix="rt5")
    for i in range(19):
        assert isinstance(lim.acquire(1000, f"o{i}", f"b{i}", 1000), Grant), i
    refused = lim.acquire(1000, "huge", "h1", 1000, large=True)
    assert isinstance(refused, Denial) and refused.reason.value == "reserve", refused
    assert refused.window == "w5h" and refused.retry_after_ms is not None
    assert refused.retry_after_ms > 4 * H, "the first charges leave w5h after 5 h"
    assert isinstance(lim.acquire(1000, "small", "s1", 1000), Grant)
    lim.set_reserve({"w5h": 0, "w24h": 0})
    assert isinstance(lim.acquire(1000, "huge", "h1", 1000, large=True), Grant)
