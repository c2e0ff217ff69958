"""The limiter's rules, one at a time, against a real Redis with a stepped clock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
import redis as redis_py
from redis.crc import key_slot

from scheduler.quota.limiter import Denial, Grant, Limiter
from scheduler.quota.plans import Plan, Policy, Window, get_preset

T0 = 1_800_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def plan_of(*windows: Window, concurrency: int | None = None, per_model: bool = False) -> Plan:
    return Plan(
        name="test",
        provider="test",
        windows=windows,
        concurrency=concurrency,
        concurrency_per_model=per_model,
        source="tests",
        as_of=dt.date(2026, 11, 22),
    )


def rolling(name: str, limit: float, duration: str) -> Window:
    return Window(name=name, limit=limit, duration=duration)


MakeLimiter = Callable[..., tuple[Limiter, Clock]]


@pytest.fixture
def make(redis: redis_py.Redis, unique: str) -> MakeLimiter:
    def build(plan: Plan, policy: Policy | None = None) -> tuple[Limiter, Clock]:
        clock = Clock()
        # Exact boundaries: no arrival margin unless a test asks for one.
        policy = policy or Policy(arrival_margin_ms=0)
        return Limiter(redis, unique, plan, policy, clock=clock), clock

    return build


def granted(result: Grant | Denial) -> Grant:
    assert isinstance(result, Grant), result
    return result


def denied(result: Grant | Denial) -> Denial:
    assert isinstance(result, Denial), result
    return result


def test_full_window_denies_with_exact_wait_and_grants_then(make: MakeLimiter) -> None:
    limiter, clock = make(plan_of(rolling("w", 3, "10s")))
    for i in range(3):
        granted(limiter.acquire(1000, "pr", f"r{i}", 60_000))
        clock.now += 1000
    d = denied(limiter.acquire(1000, "pr", "r3", 60_000))
    assert (d.reason, d.window, d.retry_after_ms) == ("window", "w", 10_000 - 3000)
    clock.now += d.retry_after_ms - 1
    assert denied(limiter.acquire(1000, "pr", "r3", 60_000)).retry_after_ms == 1
    clock.now += 1
    assert granted(limiter.acquire(1000, "pr", "r3", 60_000)).remaining == {"w": 0}


def test_denial_charges_nothing(make: MakeLimiter) -> None:
    limiter, _ = make(plan_of(rolling("w", 2, "10s")))
    granted(limiter.acquire(1500, "pr", "a", 60_000))
    before = limiter.status().windows[0].used
    denied(limiter.acquire(1000, "pr", "b", 60_000))
    assert limiter.status().windows[0].used == before == 1500


def test_longest_wait_across_two_windows_wins(make: MakeLimiter) -> None:
    limiter, clock = make(plan_of(rolling("short", 2, "10s"), rolling("long", 3, "60s")))
    for i in range(3):
        granted(limiter.acquire(1000, "pr", f"r{i}", 60_000))
        clock.now += 10_000
    d = denied(limiter.acquire(1000, "pr", "r3", 60_000))
    assert (d.reason, d.window, d.retry_after_ms) == ("window", "long", 60_000 - 30_000)


def test_fractional_weights_in_milli_units(make: MakeLimiter) -> None:
    limiter, _ = make(plan_of(rolling("w", 1, "10s")))
    for i in range(10):
        granted(limiter.acquire(100, "pr", f"flash{i}", 60_000))
    assert denied(limiter.acquire(100, "pr", "flash10", 60_000)).reason == "window"


def test_cost_that_can_never_fit_has_no_retry(make: MakeLimiter) -> None:
    limiter, _ = make(plan_of(rolling("w", 2, "10s")))
    d = denied(limiter.acquire(2001, "pr", "big", 60_000))
    assert d.retry_after_ms is None and d.window == "w"


def test_headroom_is_never_spent(make: MakeLimiter) -> None:
    limiter, _ = make(plan_of(rolling("w", 10, "10s")), Policy(headroom=0.3, arrival_margin_ms=0))
    grants = [limiter.acquire(1000, f"pr{i}", f"r{i}", 60_000) for i in range(10)]
    assert sum(g.granted for g in grants) == 7


def test_large_pr_never_eats_the_reserve_but_small_pr_can(make: MakeLimiter) -> None:
    policy = Policy(pr_share=0.2, reserve=0.3, arrival_margin_ms=0)
    limiter, _ = make(plan_of(rolling("w", 10, "1h")), policy)
    big = [limiter.acquire(1000, "big", f"b{i}", 60_000) for i in range(10)]
    # Alone, the big PR still uses all the idle budget outside the reserve.
    assert sum(g.granted for g in big) == 7
    d = denied(big[7])
    assert (d.reason, d.window) == ("reserve", "w")
    small = [limiter.acquire(1000, "small", f"s{i}", 60_000) for i in range(3)]
    assert [g.granted for g in small] == [True, True, False]
    assert denied(small[2]).reason == "reserve"


def test_pr_share_reason_when_own_use_frees_first(make: MakeLimiter) -> None:
    limiter, clock = make(
        plan_of(rolling("w", 10, "100s")), Policy(pr_share=0.2, reserve=0.3, arrival_margin_ms=0)
    )
    granted(limiter.acquire(1000, "p", "p0", 60_000))
    clock.now += 10_000
    for i in range(6):
        granted(limiter.acquire(1000, f"o{i}", f"o{i}", 60_000))
    clock.now += 10_000
    granted(limiter.acquire(1000, "p", "p1", 60_000))
    # p holds 2 of its share of 2; total 8 > 7 outside the reserve.
    d = denied(limiter.acquire(1000, "p", "p2", 60_000))
    assert (d.reason, d.retry_after_ms) == ("pr_share", 100_000 - 20_000)


def test_concurrency_lease_frees_at_deadline_and_no_sooner(make: MakeLimiter) -> None:
    limiter, clock = make(plan_of(concurrency=1))
    g = granted(limiter.acquire(0, "pr", "a", 5000))
    d = denied(limiter.acquire(0, "pr", "b", 5000))
    assert (d.reason, d.retry_after_ms) == ("concurrency", 5000)
    clock.now += 4999
    assert denied(limiter.acquire(0, "pr", "b", 5000)).retry_after_ms == 1
    clock.now += 1
    granted(limiter.acquire(0, "pr", "b", 5000))
    assert limiter.renew(g.lease_id, 5000) is False


def test_renew_keeps_slot_and_release_frees_it(make: MakeLimiter) -> None:
    limiter, clock = make(plan_of(concurrency=1))
    g = granted(limiter.acquire(0, "pr", "a", 5000))
    clock.now += 4000
    assert limiter.renew(g.lease_id, 5000) is True
    clock.now += 4000
    assert denied(limiter.acquire(0, "pr", "b", 5000)).retry_after_ms == 1000
    assert limiter.release(g.lease_id) is True
    assert limiter.release(g.lease_id) is False
    granted(limiter.acquire(0, "pr", "b", 5000))


def test_per_model_concurrency(make: MakeLimiter) -> None:
    limiter, _ = make(plan_of(concurrency=1, per_model=True))
    granted(limiter.acquire(0, "pr", "a", 5000, model="m1"))
    granted(limiter.acquire(0, "pr", "b", 5000, model="m2"))
    assert denied(limiter.acquire(0, "pr", "c", 5000, model="m1")).reason == "concurrency"


def test_same_request_id_is_charged_once(make: MakeLimiter) -> None:
    limiter, clock = make(plan_of(rolling("w", 5, "10s"), concurrency=1))
    first = granted(limiter.acquire(1000, "pr", "same", 5000))
    clock.now += 3000
    again = granted(limiter.acquire(1000, "pr", "same", 5000))
    assert again.replayed and again.lease_id == first.lease_id
    assert limiter.status().windows[0].used == 1000
    assert limiter.status().leases[0].deadline_ms == clock.now + 5000


def test_settle_and_refund_move_the_charge(make: MakeLimiter) -> None:
    limiter, _ = make(plan_of(rolling("w", 5, "10s")))
    granted(limiter.acquire(1000, "pr", "a", 5000))
    assert limiter.settle("a", 2500) is True
    assert limiter.status().windows[0].used == 2500
    assert limiter.status().windows[0].pr_used == {"pr": 2500}
    assert limiter.refund("a") is True
    assert limiter.status().windows[0].used == 0
    assert limiter.settle("a", 100) is False and limiter.refund("a") is False
    granted(limiter.acquire(1000, "pr", "a", 5000))
    assert limiter.status().windows[0].used == 1000


def test_block_keeps_the_later_deadline(make: MakeLimiter) -> None:
    limiter, clock = make(plan_of(rolling("w", 5, "10s")))
    assert limiter.block(clock.now + 60_000, "1308 5-hour window") == clock.now + 60_000
    assert limiter.block(clock.now + 1000, "shorter") == clock.now + 60_000
    assert limiter.block(clock.now - 5, "past") == clock.now + 60_000
    d = denied(limiter.acquire(1000, "pr", "a", 5000))
    assert (d.reason, d.retry_after_ms) == ("cooldown", 60_000)
    status = limiter.status()
    assert status.block is not None and status.block.reason == "1308 5-hour window"
    clock.now += 60_000
    granted(limiter.acquire(1000, "pr", "a", 5000))


def test_sync_adopts_only_the_more_pessimistic_count(make: MakeLimiter) -> None:
    limiter, clock = make(plan_of(rolling("w", 10, "100s")))
    granted(limiter.acquire(3000, "pr", "a", 5000))
    assert limiter.sync("w", 2000, clock.now + 50_000) is False
    assert limiter.sync("w", 9000, clock.now - 1) is False
    assert limiter.sync("w", 9000, clock.now + 50_000) is True
    assert limiter.status().windows[0].used == 9000
    assert denied(limiter.acquire(2000, "pr", "b", 5000)).retry_after_ms == 50_000
    clock.now += 50_000
    granted(limiter.acquire(2000, "pr", "b", 5000))
    with pytest.raises(ValueError, match="no window 'nope'"):
        limiter.sync("nope", 1, clock.now + 1)


def test_regenerating_window_refills_by_ticks(make: MakeLimiter) -> None:
    window = Window(
        name="r", limit=100, duration="20m", kind="regenerating", tick="1m", tick_percent=5
    )
    limiter, clock = make(plan_of(window))
    for i in range(10):
        granted(limiter.acquire(10_000, "pr", f"r{i}", 5000))
    d = denied(limiter.acquire(10_000, "pr", "x", 5000))
    assert (d.reason, d.retry_after_ms) == ("window", 2 * 60_000)
    clock.now += 60_000
    status = limiter.status().windows[0]
    assert (status.used, status.next_free_at_ms) == (95_000, clock.now + 60_000)
    clock.now += 60_000
    granted(limiter.acquire(10_000, "pr", "x", 5000))


def test_presets_drive_the_limiter(make: MakeLimiter) -> None:
    limiter, _ = make(get_preset("zai-lite"))
    grants = []
    for i in range(81):
        grants.append(limiter.acquire(1000, f"pr{i}", f"r{i}", 60_000))
        if isinstance(grants[-1], Grant):
            limiter.release(grants[-1].lease_id)
    assert sum(g.granted for g in grants) == 80
    d = denied(grants[80])
    assert (d.reason, d.window) == ("window", "prompts_5h")


def test_real_redis_time_is_used_without_a_test_clock(redis: redis_py.Redis, unique: str) -> None:
    limiter = Limiter(redis, unique, plan_of(rolling("w", 5, "10s")))
    g = granted(limiter.acquire(1000, "pr", "a", 5000))
    seconds, micros = redis.time()
    assert abs(seconds * 1000 + micros // 1000 - g.now_ms) < 2000


def test_keys_share_one_slot_and_all_expire(make: MakeLimiter, redis: redis_py.Redis) -> None:
    window = Window(
        name="g", limit=10, duration="1h", kind="regenerating", tick="1m", tick_percent=5
    )
    limiter, clock = make(plan_of(rolling("w", 5, "10s"), window, concurrency=2))
    granted(limiter.acquire(1000, "pr", "a", 5000))
    limiter.block(clock.now + 1000, "test")
    limiter.sync("w", 4000, clock.now + 5000)
    assert len({key_slot(k.encode()) for k in limiter.keys}) == 1
    existing = [k for k in limiter.keys if redis.exists(k)]
    assert len(existing) == 3
    assert all(redis.pttl(k) > 0 for k in existing)


def test_status_is_read_only(make: MakeLimiter, redis: redis_py.Redis) -> None:
    limiter, clock = make(plan_of(rolling("w", 5, "10s"), concurrency=2))
    granted(limiter.acquire(1000, "pr", "a", 5000))
    clock.now += 20_000
    before = {k: redis.dump(k) for k in limiter.keys}
    status = limiter.status()
    assert status.windows[0].used == 0 and status.leases == []
    assert {k: redis.dump(k) for k in limiter.keys} == before


def test_scripts_survive_a_script_cache_flush(make: MakeLimiter, redis: redis_py.Redis) -> None:
    limiter, _ = make(plan_of(rolling("w", 5, "10s"), concurrency=2))
    granted(limiter.acquire(1000, "pr", "a", 5000))
    redis.script_flush()
    granted(limiter.acquire(1000, "pr", "b", 5000))
    assert limiter.status().windows[0].used == 2000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pr": ""}, "pr must be"),
        ({"pr": "a|b"}, "pr must be"),
        ({"request_id": ""}, "request_id"),
        ({"lease_ms": 0}, "lease_ms"),
        ({"cost": -1}, "cost must be"),
        ({"cost": {"nope": 1}}, "unknown windows"),
    ],
)
def test_bad_arguments_are_rejected(
    make: MakeLimiter, kwargs: dict[str, object], message: str
) -> None:
    limiter, _ = make(plan_of(rolling("w", 5, "10s")))
    args: dict[str, object] = {"cost": 1000, "pr": "pr", "request_id": "r", "lease_ms": 1000}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        limiter.acquire(**args)  # type: ignore[arg-type]


def test_keys_emptied_and_recreated_get_a_ttl_again(
    make: MakeLimiter, redis: redis_py.Redis
) -> None:
    """Redis drops an emptied set; the TTL refresh is skipped most of the time, so a
    recreated key must be noticed, or an abandoned account would leave keys forever."""
    limiter, clock = make(plan_of(rolling("w", 5, "10s"), concurrency=2))
    state, log, leases = limiter.keys
    g = granted(limiter.acquire(1000, "pr", "a", 5000))
    limiter.release(g.lease_id)
    assert limiter.refund("a") is True
    assert not redis.exists(log) and not redis.exists(leases)
    clock.now += 1000
    granted(limiter.acquire(1000, "pr", "b", 5000))
    assert all(redis.pttl(k) > 0 for k in (state, log, leases))
    clock.now += 20_000  # "b" leaves the only window: the log empties on the next trim
    granted(limiter.acquire(1000, "pr", "c", 5000))
    assert all(redis.pttl(k) > 0 for k in (state, log, leases))


def test_arrival_margin_keeps_a_charge_past_its_window(make: MakeLimiter) -> None:
    """A provider counts a request from its arrival, a little after the grant: the
    charge must not leave our window before it leaves the provider's."""
    limiter, clock = make(plan_of(rolling("w", 1, "10s")), Policy(arrival_margin_ms=500))
    granted(limiter.acquire(1000, "pr", "a", 5000))
    clock.now += 10_000
    assert denied(limiter.acquire(1000, "pr", "b", 5000)).retry_after_ms == 500
    clock.now += 500
    granted(limiter.acquire(1000, "pr", "b", 5000))
    assert limiter.plan.windows[0].duration_ms == 10_000  # the plan as configured
