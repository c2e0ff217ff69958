"""Exact charging on a credit plan, through `attempt` on a real Redis with a MockTransport
provider: the grant reserves an upper bound (learned input bound x estimate, plus the
output bound, at the arrival's time factor), the settle charges what `usage` says and
returns the rest at once, and every settled call teaches the input bound."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_py
from test_provider_client import Recorder

from scheduler.config import ConfigError, ReviewSettings, Settings, load_settings
from scheduler.quota.circuit import Circuit
from scheduler.quota.plans import Account, get_preset
from scheduler.quota.tokenbound import InputBound, InputBoundPolicy
from workers.providers.attempt import Served, attempt
from workers.providers.client import ChatMessage, ChatRequest
from workers.providers.failover import Choice, Route, build_route

KEY_ENV = "RQ_V3_KEY"
ENV = {KEY_ENV: "zai-v3-Secret.9"}
# Tuesday 2026-12-08 07:00 UTC is 15:00 UTC+8: peak (1x).
PEAK_MS = int(dt.datetime(2026, 12, 8, 7, 0, tzinfo=dt.UTC).timestamp() * 1000)
PEAK_START_MS = int(dt.datetime(2026, 12, 8, 6, 0, tzinfo=dt.UTC).timestamp() * 1000)
OFF_PEAK_MS = PEAK_START_MS - 3_600_000


def v3_account(name: str) -> Account:
    return Account(
        name=name,
        provider="zai",
        base_url="https://zai.test/api/coding/paas/v4",
        api_key_env=KEY_ENV,
        plan=get_preset("zai-lite-v3"),
    )


def request(chars: int = 4000, max_tokens: int = 1000) -> ChatRequest:
    """`chars` characters: an estimate of chars / 4 tokens."""
    return ChatRequest(
        model="glm-5.1",
        messages=(ChatMessage(role="user", content="x" * chars),),
        max_tokens=max_tokens,
        thinking={"type": "disabled"},
    )


def answer(prompt: int, completion: int, cached: int = 0) -> Callable[[httpx.Request], Any]:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    body = {"choices": [{"message": {"role": "assistant", "content": "ok"}}], "usage": usage}
    return lambda r: httpx.Response(200, json=body)


def route_for(redis: redis_py.Redis, name: str, rec: Recorder, now_ms: int) -> Route:
    return build_route(
        Settings(accounts=[v3_account(name)]),
        redis,
        env=ENV,
        transport=rec.transport,
        circuit=Circuit(redis),
        clock=lambda: now_ms,
    )


def charged_at_grant(route: Route) -> tuple[list[int], Callable[[Choice], None]]:
    seen: list[int] = []

    def on_grant(choice: Choice) -> None:
        seen.append(choice.entry.limiter.status().windows[0].used)

    return seen, on_grant


def used(route: Route) -> list[int]:
    return [w.used for w in route.entries[0].limiter.status().windows]


def test_grant_reserves_the_bound_and_settle_returns_the_rest(
    redis: redis_py.Redis, unique: str
) -> None:
    route = route_for(redis, unique, Recorder(answer(1200, 300, cached=200)), PEAK_MS)
    seen, on_grant = charged_at_grant(route)
    outcome = attempt(
        request(), pr="p", request_id="r1", route=route, now_ms=PEAK_MS, on_grant=on_grant
    )
    assert isinstance(outcome, Served)
    # Grant: estimate 1,000 tokens x start factor 4.0 = 4,000 input, 1,000 output, at
    # peak: (4,000 x 6.9 + 1,000 x 24) / 10,000 = 5.16 credits.
    assert seen == [5160]
    # Settle: (1,000 x 6.9 + 200 x 1.7 + 300 x 24) / 10,000 = 1.444 credits, at once.
    assert used(route) == [1444, 1444]
    assert outcome.cost == {"credits_5h": 1444, "credits_week": 1444}
    assert route.entries[0].ledger.totals() == {"credits_5h": 1444, "credits_week": 1444}
    [stats] = route.entries[0].input_bound.stats()
    assert (stats.calls, stats.exceeded, stats.max_ratio) == (1, 0, 1.2)


def test_off_peak_costs_half_and_a_grant_just_before_peak_pays_peak(
    redis: redis_py.Redis, unique: str
) -> None:
    off = route_for(redis, unique + "a", Recorder(answer(1000, 100)), OFF_PEAK_MS)
    seen, on_grant = charged_at_grant(off)
    attempt(request(), pr="p", request_id="r", route=off, now_ms=OFF_PEAK_MS, on_grant=on_grant)
    assert seen == [2580]  # 5.16 / 2
    # Granted 500 ms before 14:00 UTC+8: with the 1,000 ms arrival margin the request
    # may reach the provider in peak, so it reserves and settles at 1x.
    edge = PEAK_START_MS - 500
    near = route_for(redis, unique + "b", Recorder(answer(1000, 100)), edge)
    seen, on_grant = charged_at_grant(near)
    attempt(request(), pr="p", request_id="r", route=near, now_ms=edge, on_grant=on_grant)
    assert seen == [5160]
    assert used(near)[0] == 930  # (1,000 x 6.9 + 100 x 24) / 10,000 at 1x


def test_an_input_over_its_bound_is_counted_and_settles_its_true_cost(
    redis: redis_py.Redis, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    route = route_for(redis, unique, Recorder(answer(5000, 100)), PEAK_MS)
    attempt(request(), pr="p", request_id="r", route=route, now_ms=PEAK_MS)
    [stats] = route.entries[0].input_bound.stats()
    assert (stats.calls, stats.exceeded) == (1, 1)
    assert used(route)[0] == 3690  # (5,000 x 6.9 + 100 x 24) / 10,000
    assert any("input bound exceeded" in r.getMessage() for r in caplog.records)


def test_the_bound_is_learned_from_settled_calls(redis: redis_py.Redis, unique: str) -> None:
    policy = InputBoundPolicy(start=4.0, margin=0.05, warmup=3)
    bound = InputBound(redis, unique, key_prefix="reviewq", policy=policy)
    assert bound.factor("m") == 4.0  # nothing learned: the safe start
    for actual in (1100, 1300, 1200):
        assert not bound.record("m", 1000, actual, bound.bound("m", 1000))
    # Warm: the largest ratio seen (1.3) plus 5 %.
    assert bound.factor("m") == pytest.approx(1.365)
    assert bound.bound("m", 1000) == 1365
    assert bound.record("m", 1000, 1400, 1365)  # over: counted
    assert [(s.calls, s.exceeded) for s in bound.stats()] == [(4, 1)]
    assert bound.factor("other") == 4.0  # per model


def test_a_credit_plan_needs_a_priced_model_and_bounded_reasoning() -> None:
    account = v3_account("zai")
    with pytest.raises(ValueError, match=r"'glm-4\.6' has no price .* plan 'zai-lite-v3'"):
        Settings(accounts=[account], review=ReviewSettings(model="glm-4.6"))
    with pytest.raises(ValueError, match=r"thinking.*must be bounded"):
        Settings(accounts=[account], review=ReviewSettings(thinking="enabled"))
    with pytest.raises(ValueError, match=r"thinking.*must be bounded"):
        Settings(accounts=[account], review=ReviewSettings(thinking="provider"))
    fine = Settings(accounts=[account], review=ReviewSettings(thinking_budget=1024))
    assert fine.review.model_for(fine.accounts) == "glm-5.1"  # the plan's default
    assert fine.review.thinking_for(fine.accounts) == {"type": "disabled"}  # auto
    thinking = ReviewSettings(thinking="enabled", thinking_budget=1024)
    assert thinking.thinking_for([account]) == {"type": "enabled", "budget_tokens": 1024}
    assert request().output_bound == 1000
    with_budget = request().model_copy(
        update={"thinking": {"type": "enabled", "budget_tokens": 512}}
    )
    assert with_budget.output_bound == 1512


def test_config_file_errors_name_the_model_and_the_table(tmp_path: Path) -> None:
    path = tmp_path / "reviewq.toml"
    path.write_text(
        '[review]\nmodel = "glm-4.6"\n[[accounts]]\nname = "zai"\nplan = "zai-pro-v3"\n'
    )
    with pytest.raises(ConfigError, match=r"glm-4\.6.*price table of plan 'zai-pro-v3'"):
        load_settings(path)
    path.write_text(
        '[[accounts]]\nname = "zai"\nplan = "zai-pro-v3"\n'
        '[accounts.offpeak]\ndefer = "large"\nmax_defer = "6h"\nquota_poll = "30s"\n'
    )
    with pytest.raises(ConfigError, match=r"offpeak\.quota_poll: unknown key"):
        load_settings(path)
    path.write_text(
        '[[accounts]]\nname = "zai"\nplan = "zai-pro-v3"\nquota_poll = "30s"\n'
        '[accounts.offpeak]\ndefer = "large"\nmax_defer = "6h"\n'
    )
    [account] = load_settings(path).accounts
    assert account.quota_poll_ms == 30_000 and account.offpeak is not None
    assert account.offpeak.max_defer_ms == 6 * 3_600_000
    path.write_text('[[accounts]]\nname = "zai"\nplan = "zai-pro"\n[accounts.offpeak]\n')
    with pytest.raises(ConfigError, match=r"accounts\[0\]\.offpeak: plan 'zai-pro' has no time"):
        load_settings(path)


def test_a_refused_call_is_refunded_and_leaves_the_ledger_as_it_was(
    redis: redis_py.Redis, unique: str
) -> None:
    busy = {"error": {"code": "1302", "message": "High concurrency usage of this API"}}
    route = route_for(redis, unique, Recorder(lambda r: httpx.Response(429, json=busy)), PEAK_MS)
    outcome = attempt(request(), pr="p", request_id="r", route=route, now_ms=PEAK_MS)
    assert type(outcome).__name__ == "Retry"
    assert used(route) == [0, 0]
    assert route.entries[0].ledger.totals() == {"credits_5h": 0, "credits_week": 0}
