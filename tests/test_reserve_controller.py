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
from scheduler.quota.reserve import PrDemand, reserve_milli, size_reserve
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
    """share 8,000; horizon 10 h; now 10 h. A small PR (2,000) that arrived 5 h ago and
    is done weighs 1,000 recent; a small open one from 2 h ago, 1,000 spent of 3,000,
    weighs 2,400 recent and 2,000 queued; an open large PR (40,000) from 2 h ago weighs
    its share only, 8,000 x 0.8 = 6,400 recent, and has 8,000 - 3,000 = 5,000 of it
    queued; a small PR from 11 h ago, done, and one estimated at exactly the share 12 h
    ago count nothing."""
    prs = [
        _pr(5 * H, 2_000, open_=False),
        _pr(8 * H, 3_000, 1_000),
        _pr(8 * H, 40_000, 3_000),
        _pr(-1 * H, 2_000, open_=False),
        _pr(-2 * H, 8_000, open_=False),
    ]
    d = size_reserve(prs, 10 * H, "w", 8_000, (0, 64_000), 10 * H)
    assert (d.recent, d.queued, d.reserve) == (9_800, 7_000, 16_800)
    assert size_reserve(prs, 10 * H, "w", 8_000, (0, 10_000), 10 * H).reserve == 10_000
    assert size_reserve([], 10 * H, "w", 8_000, (1_600, 10_000), 10 * H).reserve == 1_600
    at_share = size_reserve([_pr(9 * H, 8_000, open_=False)], 10 * H, "w", 8_000, (0, 9**9), 10 * H)
    assert at_share.recent == 7_200  # estimated at exactly its share: all of it
    big = size_reserve([_pr(9 * H, 80_000, open_=False)], 10 * H, "w", 8_000, (0, 9**9), 10 * H)
    assert big.recent == 7_200  # a large PR: its share only, 8,000 x 0.9


def test_an_open_pr_over_its_share_adds_nothing_queued() -> None:
    d = size_reserve([_pr(0, 40_000, 9_000)], 20 * H, "w", 8_000, (0, 64_000), 10 * H)
    assert (d.recent, d.queued, d.reserve) == (0, 0, 0)


def test_a_window_without_an_estimate_takes_the_largest() -> None:
    pr = PrDemand(0, {"other": 3_000, "more": 5_000}, {}, True)
    assert size_reserve([pr], 0, "w", 8_000, (0, 64_000), H).queued == 5_000


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


def _recent(estimate: int, age_ms: int, horizon_ms: int = 5 * H) -> int:
    """One arrival's weight, by the doc's formula: ceil(estimate x (1 - age / horizon))."""
    return -(-estimate * (horizon_ms - age_ms) // horizon_ms)


def test_quiet_then_a_small_pr_then_served(adm: Admission, unique: str) -> None:
    """No PRs: the floor (5 % of 24 and of 80 requests). A 2-message PR estimated at 2
    requests per window: 2 requests queued, and nearly 2 recent (a minute of a 5-hour
    decay later); once it has spent 1 request, 1 queued. Status and history show each."""
    ctl = _controller(adm, unique)
    lim = ctl.limiters[0]
    now = adm.now_ms()
    assert ctl.step(now) == 1
    assert _in_force(lim) == {"w5h": 1_200, "w24h": 4_000}
    adm.submit("o/r#1", "sha1", ["a", "b"], files=2, plan={}, estimate={"w5h": 2000, "w24h": 2000})
    assert ctl.step(now + 1) == 0, "not due before the interval"
    arrived = int(adm.redis.hget(adm.keys.meta("o/r#1"), "arrived_ms") or 0)
    t1 = now + 60_000
    ctl.step(t1)
    first = _recent(2000, t1 - arrived) + 2000
    assert _in_force(lim) == {"w5h": first, "w24h": 4_000}  # the 24 h floor is above
    demand = lim.status().reserve_demand
    assert demand is not None and demand["windows"]["w5h"] == {
        "recent": _recent(2000, t1 - arrived),
        "queued": 2_000,
        "reserve": first,
    }
    assert isinstance(lim.acquire(1000, "o/r#1", "r1", 1000), Grant)
    t2 = t1 + 60_000
    ctl.step(t2)
    second = _recent(2000, t2 - arrived) + 1000
    assert _in_force(lim)["w5h"] == second
    history = lim.reserve_history()
    assert [v["w5h"] for _, v in history] == [1_200, first, second]


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
    adm.submit("o/r#2", "sha2", ["a"], files=1, plan={}, estimate={"w5h": 1000, "w24h": 1000})
    waker.step(block=False)
    assert _in_force(ctl.limiters[0]) == {"w5h": 2_000, "w24h": 4_000}
    raw = adm.redis.hget(ctl.limiters[0].keys[0], "rd")
    assert raw is not None and json.loads(raw)["windows"]["w24h"]["recent"] == 1000


def test_a_burst_is_remembered_then_lent_back(adm: Admission, unique: str) -> None:
    """Four one-request PRs, then served: the reserve decays linearly to the floor over
    the horizon (checked at a half: 4 x 1000 x 0.5 = 2000 recent)."""
    ctl = _controller(adm, unique)
    for i in range(4):
        adm.submit(f"o/r#{i}", "s", ["a"], files=1, plan={}, estimate={"w5h": 1000})
        adm.redis.hset(adm.keys.meta(f"o/r#{i}"), "status", "done")
    now = adm.now_ms()
    ctl.step(now)
    assert _in_force(ctl.limiters[0])["w5h"] == 4_000
    ctl.step(now + 5 * H // 2)
    assert _in_force(ctl.limiters[0])["w5h"] == 2_000
    ctl.step(now + 5 * H)
    assert _in_force(ctl.limiters[0])["w5h"] == 1_200


def _in_force(lim: Limiter) -> dict[str, int]:
    status = lim.status()
    assert all(w.reserve_adaptive for w in status.windows)
    return {w.name: w.reserve for w in status.windows}
