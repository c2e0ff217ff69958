"""`attempt` for every response class, against a real Redis and MockTransport providers.

Main is a Z.AI Coding Plan key, the optional fallback a Synthetic key; each test checks
what an attempt leaves behind: charges, leases, blocks, circuits and requests sent.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis as redis_py
from test_provider_client import Recorder, chat, make_account

from scheduler.config import Settings
from scheduler.quota.circuit import Circuit
from scheduler.quota.limiter import Grant, Limiter
from scheduler.quota.plans import get_preset
from workers.heartbeat import Heartbeat
from workers.providers import DEFAULT_MARGIN_MS
from workers.providers.attempt import (
    DEFAULT_BLOCK_MS,
    DEFAULT_RETRY,
    Failed,
    LeaseHeartbeat,
    Outcome,
    Parked,
    Retry,
    RetryPolicy,
    Served,
    Wait,
    attempt,
    jittered_backoff,
)
from workers.providers.failover import Route, build_route

NOW = 1_788_900_000_000  # 2026-09-08T20:40:00Z
# "2026-09-09 05:38:28" Beijing == 2026-09-08T21:38:28Z
RESET_AT = 1_788_903_508_000 + DEFAULT_MARGIN_MS
FIVE_H = "Usage limit reached for 5 hour. Your limit will reset at 2026-09-09 05:38:28"
MAIN_KEY, FB_KEY = "zai-main-Secret.1", "syn-fallback-Secret.2"
ENV = {"RQ_MAIN_KEY": MAIN_KEY, "RQ_FB_KEY": FB_KEY}
ZAI_COST = 2000  # glm-5.1 off-peak (20:40 UTC is 04:40 in UTC+8)
MODEL = "glm-5.1"
ZAI_PRO = get_preset("zai-pro")
Handler = Callable[[httpx.Request], httpx.Response]


def ok(request: httpx.Request) -> httpx.Response:
    message = {"role": "assistant", "content": "LGTM from " + request.url.host}
    usage = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    return httpx.Response(200, json={"choices": [{"message": message}], "usage": usage})


def zai_error(code: str, message: str, status: int = 429) -> Handler:
    return lambda r: httpx.Response(status, json={"error": {"code": code, "message": message}})


def zai_quota(request: httpx.Request) -> httpx.Response:
    limits = [{"type": "TOKENS_LIMIT", "unit": 3, "percentage": 100, "nextResetTime": RESET_AT}]
    return httpx.Response(200, json={"data": {"limits": limits}, "success": True})


class Providers:
    """Routes each request to the handler for its host; Z.AI's quota endpoint says 100 %."""

    def __init__(self) -> None:
        self.main: Handler = ok
        self.fallback: Handler = ok
        self.rec = Recorder(self._dispatch)

    def _dispatch(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/quota/limit"):
            return zai_quota(request)
        return (self.main if request.url.host == "zai.test" else self.fallback)(request)

    def calls(self, host: str) -> int:
        return self.rec.count("/chat/completions", host=host)


Setup = tuple[Route, Providers]


@pytest.fixture
def make(redis: redis_py.Redis, unique: str) -> Iterator[Callable[..., Setup]]:
    circuit = Circuit(redis)
    names: list[str] = []

    def build(*, fallback: bool = False, max_wait_ms: int = 60_000) -> Setup:
        zai, syn = "https://zai.test/api/coding/paas/v4", "https://syn.test/openai/v1"
        main = make_account(
            f"{unique}-main", provider="zai", base_url=zai, key_env="RQ_MAIN_KEY", plan=ZAI_PRO
        )
        fb = make_account(f"{unique}-fb", base_url=syn, key_env="RQ_FB_KEY")
        accounts = [main, fb] if fallback else [main]
        names.extend(a.name for a in accounts)
        providers = Providers()
        route = build_route(
            Settings(accounts=accounts),
            redis,
            env=ENV,
            transport=providers.rec.transport,
            circuit=circuit,
            clock=lambda: NOW,  # the limiters' test clock; no test here moves it
            max_wait_ms=max_wait_ms,
        )
        return route, providers

    yield build
    for name in names:  # some circuits (1313) never expire on their own
        circuit.close(name)


def run(route: Route, request_id: str = "r1", **kw: Any) -> Outcome:
    kw.setdefault("rng", random.Random(1))
    return attempt(chat(MODEL), pr="pr-1", request_id=request_id, route=route, now_ms=NOW, **kw)


def used(limiter: Limiter) -> int:
    return limiter.status().windows[0].used


def leases(route: Route) -> int:
    return sum(len(e.limiter.status().leases) for e in route.entries)


def test_ok_is_served_settled_and_released(make: Callable[..., Setup]) -> None:
    route, providers = make()
    outcome = run(route)
    assert isinstance(outcome, Served)
    assert outcome.account == route.names[0]
    assert outcome.content == "LGTM from zai.test"
    assert outcome.usage is not None and outcome.usage.total_tokens == 120
    assert not outcome.lease_lost
    assert used(route.entries[0].limiter) == ZAI_COST
    assert leases(route) == 0
    assert providers.calls("zai.test") == 1
    assert isinstance(run(route), Served)  # RQ ran the job again: a replay, not charged
    assert used(route.entries[0].limiter) == ZAI_COST


def test_ok_settles_the_actual_cost_hook(make: Callable[..., Setup]) -> None:
    route, _ = make()
    entry = route.entries[0]
    entry.client.actual_cost = lambda result: {"prompts_5h": 500, "prompts_week": 700}  # type: ignore[method-assign]
    assert isinstance(run(route), Served)
    assert [w.used for w in entry.limiter.status().windows] == [500, 700]


def test_server_error_retries_with_backoff_and_keeps_the_charge(
    make: Callable[..., Setup],
) -> None:
    route, providers = make()
    providers.main = lambda r: httpx.Response(503, text="upstream unavailable")
    outcome = run(route)
    assert isinstance(outcome, Retry)
    assert (outcome.kind, outcome.attempt_count) == ("transient", 1)
    assert outcome.account == route.names[0]
    assert DEFAULT_RETRY.base_ms // 2 <= outcome.after_ms <= DEFAULT_RETRY.base_ms
    assert used(route.entries[0].limiter) == ZAI_COST  # it reached the provider
    assert leases(route) == 0
    assert providers.calls("zai.test") == 1
    again = run(route, retries=outcome.attempt_count)
    assert isinstance(again, Retry) and again.attempt_count == 2
    assert used(route.entries[0].limiter) == ZAI_COST  # the retry replays, no new charge


def test_retries_are_bounded(make: Callable[..., Setup]) -> None:
    route, providers = make()
    providers.main = lambda r: httpx.Response(503)
    outcome = run(route, retries=DEFAULT_RETRY.max_retries)
    assert isinstance(outcome, Failed)
    assert f"after {DEFAULT_RETRY.max_retries} retries" in outcome.reason
    policy = RetryPolicy(max_retries=1)
    assert isinstance(run(route, retries=0, policy=policy), Retry)
    assert isinstance(run(route, retries=1, policy=policy), Failed)


def raising(error: Exception) -> Handler:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error

    return fail


@pytest.mark.parametrize(
    ("handler", "kind", "charged", "counted"),
    [
        (raising(httpx.ConnectError("refused")), "transient", 0, {}),  # never left: refund
        (raising(httpx.ReadTimeout("no answer")), "transient", ZAI_COST, {}),
        (lambda r: httpx.Response(200, json={"choices": []}), "garbage", ZAI_COST, {}),
        (zai_error("1302", "High concurrency usage"), "transient", 0, {"1302": 1}),  # refused
    ],
    ids=["connect-refused", "read-timeout", "garbage", "zai-1302"],
)
def test_retry_classes_and_what_stays_charged(
    make: Callable[..., Setup], handler: Handler, kind: str, charged: int, counted: dict
) -> None:
    route, providers = make()
    providers.main = handler
    outcome = run(route)
    assert isinstance(outcome, Retry) and outcome.kind == kind
    assert used(route.entries[0].limiter) == charged
    assert route.circuit.counters(route.names[0]) == counted
    assert route.entries[0].limiter.status().block is None
    held = [lease.lease_id for lease in route.entries[0].limiter.status().leases]
    # A 1302 keeps the refused slot out of use with a hold lease; nothing else stays.
    assert [h.startswith("|~1302-hold.r1.") for h in held] == ([True] if counted else [])


def test_a_1302_lowers_effective_concurrency_until_the_hold_lapses(
    make: Callable[..., Setup],
) -> None:
    """Concurrency 1 on the plan: after one 1302 the only slot is held, so the next
    message waits for the hold instead of storming the provider; afterwards it runs."""
    route, providers = make()
    providers.main = zai_error("1302", "High concurrency usage")
    policy = RetryPolicy(concurrency_hold_ms=30_000)
    assert isinstance(run(route, "r1", policy=policy), Retry)
    sent = providers.calls("zai.test")
    outcome = run(route, "r2", policy=policy)
    assert isinstance(outcome, Wait) and providers.calls("zai.test") == sent
    limiter = route.entries[0].limiter
    hold = limiter.status().leases[0]
    assert 0 < outcome.until_ms - limiter.status().now_ms <= 30_000
    assert hold.deadline_ms == outcome.until_ms
    limiter.release(hold.lease_id)  # stands in for the hold lapsing
    providers.main = ok
    assert isinstance(run(route, "r2", policy=policy), Served)


def test_a_hinted_wait_beyond_max_wait_blocks_and_fails_over(make: Callable[..., Setup]) -> None:
    route, providers = make(fallback=True, max_wait_ms=60_000)
    providers.main = lambda r: httpx.Response(503, headers={"retry-after": "600"})
    outcome = run(route)
    assert isinstance(outcome, Served) and outcome.account == route.names[1]
    block = route.entries[0].limiter.status().block
    assert block is not None and block.until_ms >= NOW + 600_000


def test_a_short_hinted_wait_is_honoured_in_the_retry(make: Callable[..., Setup]) -> None:
    route, providers = make(fallback=True)
    providers.main = lambda r: httpx.Response(503, headers={"retry-after": "30"})
    outcome = run(route)
    assert isinstance(outcome, Retry) and outcome.after_ms >= 30_000
    assert providers.calls("syn.test") == 0


def test_window_exhausted_blocks_until_reset_and_sends_nothing_more(
    make: Callable[..., Setup],
) -> None:
    route, providers = make()
    providers.main = zai_error("1308", FIVE_H)
    outcome = run(route)
    assert isinstance(outcome, Wait)
    assert (outcome.until_ms, outcome.account) == (RESET_AT, route.names[0])
    limiter = route.entries[0].limiter
    block = limiter.status().block
    assert block is not None and block.until_ms == RESET_AT and "1308" in block.reason
    assert providers.calls("zai.test") == 1
    assert providers.rec.count("/quota/limit") == 1  # polled at once after the 429
    assert used(limiter) == 400_000  # the poll said 100 % of the 5 h window
    assert leases(route) == 0
    again = run(route, "r2")
    assert isinstance(again, Wait) and again.until_ms == RESET_AT
    assert providers.calls("zai.test") == 1  # ZERO further requests to the account
    assert providers.rec.count("/quota/limit") == 1


def test_window_exhausted_fails_over_now_and_later(make: Callable[..., Setup]) -> None:
    route, providers = make(fallback=True)
    providers.main = zai_error("1308", FIVE_H)
    outcome = run(route)
    assert isinstance(outcome, Served) and outcome.account == route.names[1]
    assert outcome.content == "LGTM from syn.test"
    second = run(route, "r2")
    assert isinstance(second, Served) and second.account == route.names[1]
    assert providers.calls("zai.test") == 1
    assert providers.calls("syn.test") == 2
    assert used(route.entries[0].limiter) == 400_000  # refunded, then synced by the poll


def test_synthetic_429_blocks_until_next_tick_from_its_header(
    make: Callable[..., Setup],
) -> None:
    route, providers = make(fallback=True)
    route.entries[0].limiter.block(NOW + 3_600_000 * 3, "test: main out of the way")
    rolling = {"remaining": 0, "max": 500, "limited": True, "nextTickAt": "2026-09-08T20:55:00Z"}
    quotas = {"rollingFiveHourLimit": rolling}
    body = {"error": "You've exceeded your subscription rate limits. Upgrade, or try again later."}
    providers.fallback = lambda r: httpx.Response(
        429, json=body, headers={"x-synthetic-quotas": json.dumps(quotas)}
    )
    outcome = run(route)
    assert isinstance(outcome, Wait)
    fb = route.entries[1].limiter
    block = fb.status().block
    assert block is not None and block.until_ms == 1_788_900_900_000 + DEFAULT_MARGIN_MS
    assert used(fb) == 500_000  # the header on the 429 synced the window
    assert outcome.until_ms == block.until_ms  # the sooner of the two blocked accounts


def test_window_exhausted_without_a_reset_blocks_for_the_default(
    make: Callable[..., Setup],
) -> None:
    route, providers = make()
    providers.main = lambda r: httpx.Response(
        429, headers={"x-ratelimit-remaining-requests": "0"}, json={"error": {"message": "no"}}
    )
    assert isinstance(run(route), Wait)
    block = route.entries[0].limiter.status().block
    assert block is not None
    assert NOW + DEFAULT_BLOCK_MS <= block.until_ms < NOW + DEFAULT_BLOCK_MS + 5_000


@pytest.mark.parametrize("fallback", [False, True])
def test_rejected_key_opens_the_circuit_then_parks_or_fails_over(
    make: Callable[..., Setup], fallback: bool
) -> None:
    route, providers = make(fallback=fallback)
    providers.main = lambda r: httpx.Response(401, json={"error": {"message": "bad key"}})
    for request_id in ("r1", "r2"):
        outcome = run(route, request_id)
        if fallback:
            assert isinstance(outcome, Served) and outcome.account == route.names[1]
        else:
            assert isinstance(outcome, Parked) and "RQ_MAIN_KEY" in outcome.reason
    assert route.circuit.is_open(route.names[0])
    assert used(route.entries[0].limiter) == 0 and leases(route) == 0
    assert providers.calls("zai.test") == 1


def test_fair_use_1313_parks_for_good(make: Callable[..., Setup]) -> None:
    route, providers = make()
    providers.main = zai_error("1313", "Your account is restricted under the fair use policy")
    outcome = run(route)
    assert isinstance(outcome, Parked) and "never retries" in outcome.reason
    assert route.circuit.ttl_ms_left(route.names[0]) is None
    assert isinstance(run(route, "r2"), Parked)
    assert providers.calls("zai.test") == 1


def test_missing_key_parks_naming_the_variable(make: Callable[..., Setup]) -> None:
    route, providers = make()
    route.entries[0].client._env = {}
    outcome = run(route)
    assert isinstance(outcome, Parked) and "RQ_MAIN_KEY" in outcome.reason
    assert providers.rec.requests == []
    assert used(route.entries[0].limiter) == 0


def test_too_long_prompt_fails_without_retry(make: Callable[..., Setup]) -> None:
    route, providers = make(fallback=True)
    providers.main = zai_error("1261", "Prompt exceeds max length", status=400)
    outcome = run(route)
    assert isinstance(outcome, Failed) and outcome.too_long
    assert outcome.account == route.names[0]
    assert providers.calls("syn.test") == 0
    assert leases(route) == 0


def test_no_budget_waits_without_sending(make: Callable[..., Setup]) -> None:
    route, providers = make()
    limiter = route.entries[0].limiter
    held = limiter.acquire(1000, "other", "someone-else", 45_000, model=MODEL)
    assert isinstance(held, Grant)
    outcome = run(route)
    assert isinstance(outcome, Wait)
    assert (outcome.until_ms, outcome.account) == (NOW + 45_000, route.names[0])
    assert "concurrency" in outcome.reason
    assert providers.rec.requests == []


def test_keys_never_reach_outcomes_or_logs(
    make: Callable[..., Setup], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    route, providers = make(fallback=True)

    def echo(request: httpx.Request) -> httpx.Response:
        auth = request.headers["authorization"]
        return httpx.Response(401, json={"error": {"message": f"key {auth} invalid"}})

    providers.main = providers.fallback = echo
    outcome = run(route)
    assert isinstance(outcome, Parked)
    state = route.circuit.state(route.names[0])
    for text in (repr(outcome), outcome.reason, repr(state), repr(route.entries[0].client)):
        assert MAIN_KEY not in text and FB_KEY not in text
    for record in caplog.records:
        assert MAIN_KEY not in record.getMessage() and FB_KEY not in record.getMessage()


def test_jittered_backoff_grows_within_bounds_and_caps() -> None:
    rng = random.Random(7)
    policy = RetryPolicy(base_ms=1_000, cap_ms=10_000)
    for n, step in [(1, 1_000), (2, 2_000), (3, 4_000), (4, 8_000), (5, 10_000), (60, 10_000)]:
        for _ in range(50):
            assert step // 2 <= jittered_backoff(n, policy, rng) <= step
    values = {jittered_backoff(3, policy, rng) for _ in range(50)}
    assert len(values) > 10  # jittered, not fixed


def _wait_for(done: Callable[[], bool], what: str, seconds: float = 30) -> None:
    """Until `done()`; the bound only turns a hang into a failure, so it is generous."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"still waiting for {what} after {seconds} s"
        time.sleep(0.005)


def test_heartbeat_keeps_a_slow_calls_lease_and_notes_a_lost_one(
    redis: redis_py.Redis, unique: str
) -> None:
    """The limiter's clock is the test's: after each renewal the call "runs" another
    100 ms, so three renewals carry the 150 ms lease past 300 ms, which it outlives only
    by being renewed. Nothing depends on how fast this machine runs the beat thread."""
    clock = [1_800_000_000_000]
    limiter = Limiter(redis, unique, get_preset("synthetic"), clock=lambda: clock[0])
    grant = limiter.acquire(1000, "pr", "slow", 150)
    assert isinstance(grant, Grant)
    with LeaseHeartbeat(limiter, grant.lease_id, 150) as beat:
        for n in range(1, 4):
            _wait_for(lambda n=n: beat.renewals >= n, f"renewal {n}")
            clock[0] += 100  # less than the lease, more than it has left after 2 steps
        assert clock[0] - grant.now_ms == 300 > 150
        assert [lease.lease_id for lease in limiter.status().leases] == [grant.lease_id]
        assert not beat.lost
        limiter.release(grant.lease_id)  # as if it had expired under us
        _wait_for(lambda: beat.lost, "the heartbeat to note the lost lease")


def test_a_failed_beat_is_logged_and_the_next_one_tries_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Redis hiccup must not end the heartbeat of a call still running; only a beat
    that says what it keeps alive is gone (False) does."""
    calls: list[float] = []

    def beat() -> bool:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise redis_py.ConnectionError("a blip")
        return len(calls) < 4

    with Heartbeat(beat, 0.01, name="test-heartbeat", subject="a claim") as heartbeat:
        deadline = time.monotonic() + 5
        while len(calls) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # stopped after the False: no fifth beat
    assert (len(calls), heartbeat.beats) == (4, 2)
    assert any("test-heartbeat failed for a claim" in r.getMessage() for r in caplog.records)
