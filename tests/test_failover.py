"""Circuits, pools and fallbacks against a real Redis: who serves, who waits, who parks."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
import redis as redis_py
from test_provider_client import ENV, KEY_ENV, Recorder, chat, make_account

from scheduler.config import Settings
from scheduler.quota.circuit import DEFAULT_TTL_MS, Circuit
from scheduler.quota.limiter import Grant
from scheduler.quota.plans import Account, Plan, Policy, Window
from workers.providers.attempt import Served, attempt
from workers.providers.client import request_cost
from workers.providers.failover import Choice, NoAccount, Route, build_route, choose, pools

NOW = 1_788_900_000_000


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


def plan(limit: float = 10, concurrency: int | None = None, provider: str = "synthetic") -> Plan:
    return Plan(
        name="test",
        provider=provider,
        windows=(Window(name="requests_5h", limit=limit, duration="5h"),),
        concurrency=concurrency,
        source="tests",
        as_of=dt.date(2026, 9, 1),
    )


@pytest.fixture
def circuit(redis: redis_py.Redis) -> Iterator[Circuit]:
    """Closes every circuit a test opened: some never expire on their own."""
    c = Circuit(redis)
    opened: list[str] = []
    real_open = c.open

    def tracking_open(account: str, code: str, message: str, **kw: int | None) -> None:
        opened.append(account)
        real_open(account, code, message, **kw)

    c.open = tracking_open  # type: ignore[method-assign]
    try:
        yield c
    finally:
        for account in opened:
            c.close(account)


RouteFactory = Callable[..., tuple[Route, Clock, Recorder]]


def ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"choices": [{"message": {"content": "fine"}}]})


@pytest.fixture
def make_route(redis: redis_py.Redis, unique: str, circuit: Circuit) -> RouteFactory:
    def build(
        *specs: tuple[str, str, Plan], max_wait_ms: int = 60_000
    ) -> tuple[Route, Clock, Recorder]:
        """specs: (suffix, host, plan); hosts decide pools and route the mock."""
        accounts = [
            make_account(
                f"{unique}-{s}",
                provider=p.provider,
                base_url=f"https://{h}/v1",
                key_env=f"RQ_KEY_{s.upper()}",
                plan=p,
            )
            for s, h, p in specs
        ]
        clock, rec = Clock(), Recorder(ok)
        route = build_route(
            Settings(accounts=accounts),
            redis,
            env={f"RQ_KEY_{s.upper()}": f"secret-{s}-0123" for s, _, _ in specs},
            transport=rec.transport,
            circuit=circuit,
            clock=clock,
            max_wait_ms=max_wait_ms,
        )
        return route, clock, rec

    return build


def pick(route: Route, request_id: str = "r", pr: str = "pr") -> Choice | NoAccount:
    return choose(
        route,
        lambda a: request_cost(a, "m"),
        pr=pr,
        request_id=request_id,
        model="m",
    )


def served_by(choice: Choice | NoAccount) -> str:
    assert isinstance(choice, Choice), choice
    choice.entry.limiter.release(choice.grant.lease_id)
    return choice.entry.name.rsplit("-", 1)[1]


# --- circuit ----------------------------------------------------------------------------


def test_circuit_open_close_state_and_hash_tag(circuit: Circuit, unique: str) -> None:
    assert circuit.key(unique) == f"reviewq:{{{unique}}}:circuit"
    assert not circuit.is_open(unique) and circuit.state(unique) is None
    circuit.open(unique, "401", "the API key in $X was rejected; check it", now_ms=NOW)
    assert circuit.is_open(unique)
    state = circuit.state(unique)
    assert state is not None
    assert (state.code, state.message, state.opened_at_ms) == (
        "401",
        "the API key in $X was rejected; check it",
        NOW,
    )
    assert circuit.close(unique) is True
    assert not circuit.is_open(unique)
    assert circuit.close(unique) is False


def test_circuit_has_a_week_long_ttl_and_reopening_keeps_first_time(
    circuit: Circuit, unique: str
) -> None:
    circuit.open(unique, "401", "first", now_ms=NOW)
    circuit.open(unique, "1309", "plan expired", now_ms=NOW + 5)
    left = circuit.ttl_ms_left(unique)
    assert left is not None and DEFAULT_TTL_MS - 10_000 < left <= DEFAULT_TTL_MS
    state = circuit.state(unique)
    assert state is not None and (state.code, state.opened_at_ms) == ("1309", NOW)


def test_circuit_closes_only_by_ttl(redis: redis_py.Redis, unique: str) -> None:
    short = Circuit(redis, ttl_ms=100)
    short.open(unique, "401", "bad key")
    assert short.is_open(unique)
    time.sleep(0.25)
    assert not short.is_open(unique)


def test_fair_use_circuit_never_expires(circuit: Circuit, unique: str) -> None:
    circuit.open(unique, "1313", "fair-use restriction")
    assert circuit.ttl_ms_left(unique) is None and circuit.is_open(unique)
    circuit.open(unique, "401", "later a bad key too")  # must not gain a TTL
    assert circuit.ttl_ms_left(unique) is None


def test_circuit_uses_redis_time_when_not_given(circuit: Circuit, redis: redis_py.Redis) -> None:
    name = "t-circuit-time-" + str(time.time_ns())
    circuit.open(name, "401", "x")
    seconds, _ = redis.time()
    state = circuit.state(name)
    assert state is not None and abs(state.opened_at_ms - seconds * 1000) < 5_000


def test_counters(circuit: Circuit, unique: str, redis: redis_py.Redis) -> None:
    assert circuit.counters(unique) == {}
    assert circuit.note(unique, "1302") == 1
    assert circuit.note(unique, "1302") == 2
    assert circuit.counters(unique) == {"1302": 2}
    assert 0 < redis.pttl(f"reviewq:{{{unique}}}:counters") <= DEFAULT_TTL_MS


# --- pools and fallbacks -------------------------------------------------------------------


def test_pools_group_consecutive_accounts_of_one_endpoint(make_route: RouteFactory) -> None:
    route, _, _ = make_route(
        ("a", "syn.test", plan()),
        ("b", "syn.test", plan()),
        ("c", "zai.test", plan(provider="zai")),
        ("d", "syn.test", plan()),
    )
    assert [[e.name.rsplit("-", 1)[1] for e in p] for p in pools(route.entries)] == [
        ["a", "b"],
        ["c"],
        ["d"],
    ]


def test_main_serves_when_free(make_route: RouteFactory) -> None:
    route, _, _ = make_route(("main", "syn.test", plan()), ("fb", "zai.test", plan(provider="zai")))
    assert served_by(pick(route)) == "main"


def test_fallback_when_main_is_blocked(make_route: RouteFactory) -> None:
    route, _, _ = make_route(("main", "syn.test", plan()), ("fb", "zai.test", plan(provider="zai")))
    route.entries[0].limiter.block(NOW + 30_000, "1308: 5-hour window used up")
    # Blocked by the provider: even a wait shorter than max_wait goes to the fallback.
    assert served_by(pick(route)) == "fb"


def test_fallback_when_main_circuit_is_open(make_route: RouteFactory, circuit: Circuit) -> None:
    route, _, _ = make_route(("main", "syn.test", plan()), ("fb", "zai.test", plan(provider="zai")))
    circuit.open(route.entries[0].name, "401", "bad key")
    assert served_by(pick(route)) == "fb"


def test_fallback_only_when_main_waits_longer_than_max_wait(make_route: RouteFactory) -> None:
    route, _, _ = make_route(
        ("main", "syn.test", plan(limit=1)),
        ("fb", "zai.test", plan(provider="zai")),
        max_wait_ms=60_000,
    )
    assert served_by(pick(route, "r1")) == "main"
    # main's window is full for 5 h: far beyond max_wait.
    assert served_by(pick(route, "r2")) == "fb"


def test_short_wait_for_main_beats_the_fallback(make_route: RouteFactory) -> None:
    route, _, _ = make_route(
        ("main", "syn.test", plan(concurrency=1)),
        ("fb", "zai.test", plan(provider="zai")),
        max_wait_ms=60_000,
    )
    first = pick(route, "r1")
    assert isinstance(first, Choice)  # holds main's only slot, lease 60 s
    waiting = pick(route, "r2")
    assert isinstance(waiting, NoAccount)
    assert (waiting.until_ms, waiting.account) == (NOW + 60_000, route.entries[0].name)
    assert "concurrency" in waiting.reason


def test_everything_full_waits_for_the_soonest(make_route: RouteFactory) -> None:
    route, clock, _ = make_route(
        ("main", "syn.test", plan(limit=1)),
        ("fb", "zai.test", plan(limit=1, provider="zai")),
        max_wait_ms=1_000,
    )
    served_by(pick(route, "r1"))
    clock.now += 10_000
    served_by(pick(route, "r2"))
    nothing = pick(route, "r3")
    assert isinstance(nothing, NoAccount)
    assert nothing.account == route.entries[0].name
    # The 5 h window frees 5 h after the grant, plus the policy's arrival margin.
    assert nothing.until_ms == NOW + 5 * 3_600_000 + Policy().arrival_margin_ms


def test_all_circuits_open_parks_with_the_reasons(
    make_route: RouteFactory, circuit: Circuit
) -> None:
    route, _, _ = make_route(("main", "syn.test", plan()), ("fb", "zai.test", plan(provider="zai")))
    circuit.open(route.entries[0].name, "401", f"the API key in ${KEY_ENV} was rejected")
    circuit.open(route.entries[1].name, "1313", "fair-use restriction")
    parked = pick(route)
    assert isinstance(parked, NoAccount) and parked.until_ms is None
    assert KEY_ENV in parked.reason and "fair-use" in parked.reason


def test_pool_picks_the_key_that_frees_first(make_route: RouteFactory) -> None:
    route, clock, _ = make_route(
        ("a", "syn.test", plan(concurrency=1)),
        ("b", "syn.test", plan(concurrency=1)),
        max_wait_ms=120_000,
    )
    a, b = route.entries
    assert isinstance(a.limiter.acquire(1000, "pr", "x", 60_000), Grant)
    clock.now += 10_000
    assert isinstance(b.limiter.acquire(1000, "pr", "y", 20_000), Grant)
    # a frees at +60 s, b at +30 s: wait for b.
    waiting = pick(route, "r")
    assert isinstance(waiting, NoAccount)
    assert (waiting.account, waiting.until_ms) == (b.name, NOW + 30_000)
    clock.now = NOW + 30_000
    assert served_by(pick(route, "r")) == "b"


def test_pool_uses_a_free_key_when_the_first_is_busy(make_route: RouteFactory) -> None:
    route, _, _ = make_route(
        ("a", "syn.test", plan(concurrency=1)), ("b", "syn.test", plan(concurrency=1))
    )
    first = pick(route, "r1")
    assert isinstance(first, Choice) and first.entry.name.endswith("-a")
    assert served_by(pick(route, "r2")) == "b"


def synthetic_429_for_key_a(request: httpx.Request) -> httpx.Response:
    if "secret-a-" in request.headers["authorization"]:
        body = {"error": "You've exceeded your subscription rate limits. Upgrade, or try later."}
        return httpx.Response(429, json=body)
    return ok(request)


def test_a_429_on_one_pooled_key_does_not_block_the_other(make_route: RouteFactory) -> None:
    route, clock, rec = make_route(("a", "syn.test", plan()), ("b", "syn.test", plan()))
    assert len(pools(route.entries)) == 1
    rec.handler = synthetic_429_for_key_a
    outcome = attempt(chat(), pr="pr", request_id="r1", route=route, now_ms=clock.now)
    assert isinstance(outcome, Served) and outcome.account.endswith("-b")
    a, b = route.entries
    assert a.limiter.status().block is not None
    assert b.limiter.status().block is None
    # Only key a was refused; b keeps serving, and a is not asked again meanwhile.
    outcome = attempt(chat(), pr="pr", request_id="r2", route=route, now_ms=clock.now)
    assert isinstance(outcome, Served) and outcome.account.endswith("-b")
    keys = [r.headers["authorization"] for r in rec.requests if r.url.path.endswith("/completions")]
    assert [k.split("-")[1] for k in keys] == ["a", "b", "b"]


def test_pooled_keys_stay_independent_after_a_block(make_route: RouteFactory) -> None:
    route, _, _ = make_route(("a", "syn.test", plan()), ("b", "syn.test", plan()))
    assert len(pools(route.entries)) == 1
    a, _ = route.entries
    a.limiter.block(NOW + 3_600_000, "429: 5-hour request quota used up")
    assert served_by(pick(route, "r1")) == "b"
    assert served_by(pick(route, "r2")) == "b"


def test_build_route_reads_settings_in_order(redis: redis_py.Redis, unique: str) -> None:
    accounts: list[Account] = [
        make_account(f"{unique}-{n}", base_url=f"https://{n}.test/v1") for n in ("x", "y", "z")
    ]
    settings = Settings(accounts=accounts)
    route = build_route(settings, redis, env=ENV)
    assert route.names == tuple(a.name for a in accounts)
    route = build_route(settings, redis, env=ENV, accounts=[f"{unique}-z", f"{unique}-x"])
    assert route.names == (f"{unique}-z", f"{unique}-x")
    entry = route.entries[0]
    assert entry.limiter.account == entry.client.account.name == entry.poller.limiter.account
    with pytest.raises(KeyError):
        build_route(settings, redis, env=ENV, accounts=["nope"])
    with pytest.raises(ValueError):
        build_route(Settings(), redis, env=ENV)
