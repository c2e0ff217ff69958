"""The provider simulator's V3 (credit) flavour over real HTTP: it bills each call in
credits from the usage it returns, at the time factor of its own calendar, refuses with
1308/1310 and UTC+8 reset times, and publishes `CREDIT_LIMIT` quota entries; all of it
from the plan's numbers, checked here by hand and through the client's own parsers."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from scheduler.quota.plans import Plan, get_preset
from scheduler.sandbox import DEV_KEY, Latency, ProviderConfig, create_provider_app, serve_in_thread
from scheduler.sandbox.provider.credits import sim_tokens
from workers.providers.classify import ResponseClass, classify
from workers.providers.quota import parse_zai
from workers.providers.quota_answers import zai_key_kind

FAST = Latency(median_s=0.001, p95_s=0.002)
AUTH = {"Authorization": f"Bearer {DEV_KEY}"}
PEAK = dt.datetime(2026, 12, 8, 7, 0, tzinfo=dt.UTC)  # Tuesday 15:00 UTC+8
OFF_PEAK = dt.datetime(2026, 12, 8, 3, 0, tzinfo=dt.UTC)
CHAT = "/api/coding/paas/v4/chat/completions"


@pytest.fixture
def v3() -> Iterator[tuple[str, Any]]:
    yield from _serve(get_preset("zai-lite-v3"))


def _serve(plan: Plan) -> Iterator[tuple[str, Any]]:
    app = create_provider_app(ProviderConfig(flavour="zai", plan=plan, latency=FAST, seed=7))
    with serve_in_thread(app) as server:
        yield server.url, app.state.sim


def chat(url: str, text: str, **extra: object) -> httpx.Response:
    body = {"model": "glm-5.1", "messages": [{"role": "user", "content": text}], **extra}
    return httpx.post(url + CHAT, json=body, headers=AUTH, timeout=10)


def by_hand(usage: dict[str, Any], factor: float) -> int:
    """GLM-5.1: 6.9 / 1.7 / 24 credits per 10,000 tokens, in milli-credits, rounded up."""
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    fresh = usage["prompt_tokens"] - cached
    per_10k = fresh * 6.9 + cached * 1.7 + usage["completion_tokens"] * 24
    return math.ceil(round(per_10k * factor / 10, 6))


def test_credits_from_the_usage_it_returns_at_its_calendars_factor(v3: tuple[str, Any]) -> None:
    url, sim = v3
    sim.clock.set_calendar(PEAK.timestamp(), sim.clock.now())
    first = chat(url, "def f(x):\n    return x[0] != x[1]\n", thinking={"type": "disabled"})
    usage = first.json()["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0
    peak_cost = by_hand(usage, 1.0)
    assert sim.stats()["credits_charged"] == peak_cost
    sim.clock.set_calendar(OFF_PEAK.timestamp(), sim.clock.now())
    again = chat(url, "def f(x):\n    return x[0] != x[1]\n", thinking={"type": "disabled"})
    usage2 = again.json()["usage"]
    assert usage2["prompt_tokens_details"]["cached_tokens"] > 0  # the prefix was cached
    assert usage2["completion_tokens"] == usage["completion_tokens"]  # drawn per request
    assert sim.stats()["credits_charged"] == peak_cost + by_hand(usage2, 0.5)


def test_its_tokenizer_is_not_characters_over_four() -> None:
    dense = 'if (x[i] != y[j] && flag) { data = {"id": 12345}; }'
    prose = "The caller owns this buffer and must release it later"
    assert sim_tokens(dense) > math.ceil(len(dense) / 4)
    assert sim_tokens(prose) < math.ceil(len(prose) / 4)


def test_reasoning_follows_the_thinking_switch(v3: tuple[str, Any]) -> None:
    url, _ = v3

    def reasoning(**extra: object) -> int:
        usage = chat(url, "x = 1", max_tokens=100, **extra).json()["usage"]
        return int(usage["completion_tokens_details"]["reasoning_tokens"])

    assert reasoning(thinking={"type": "disabled"}) == 0
    assert 0 < reasoning(thinking={"type": "enabled", "budget_tokens": 256}) <= 256
    assert 0 < reasoning() <= 4096  # the model's own default: unbounded for the client


@pytest.mark.parametrize(("five_h", "week", "code"), [(1, 1000, "1308"), (1000, 1, "1310")])
def test_used_up_windows_answer_1308_or_1310_with_a_utc8_reset(
    five_h: int, week: int, code: str
) -> None:
    windows = (
        {"name": "credits_5h", "limit": five_h, "duration": "5h", "unit": "credits"},
        {"name": "credits_week", "limit": week, "duration": "7d", "unit": "credits"},
    )
    plan = Plan.model_validate({**get_preset("zai-lite-v3").model_dump(), "windows": windows})
    for url, sim in _serve(plan):
        assert chat(url, "x" * 4000).status_code == 200  # some credit left: admitted
        stats = sim.stats()
        used = next(w for w in stats["windows"] if w["limit"] == 1000)
        assert used["max_used_in_any_window"] > used["limit"]  # its overshoot is visible
        refused = chat(url, "x")
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["code"] == code and "Your limit will reset at 20" in error["message"]
        now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        c = classify(429, refused.headers, refused.content, now_ms=now_ms, provider="zai")
        assert c.cls is ResponseClass.WINDOW_EXHAUSTED and c.reset_at_ms is not None
        assert c.reset_at_ms > now_ms


def test_quota_view_has_credit_limit_entries_with_counts(v3: tuple[str, Any]) -> None:
    url, sim = v3
    chat(url, "x = 1\n" * 50, thinking={"type": "disabled"})
    raw = httpx.get(url + "/api/monitor/usage/quota/limit", headers={"Authorization": DEV_KEY})
    data = raw.json()
    assert data["data"]["level"] == "lite"
    five_h, week = data["data"]["limits"]
    assert (five_h["type"], five_h["unit"], five_h["number"]) == ("CREDIT_LIMIT", 3, 5)
    assert (week["unit"], week["number"]) == (6, 1)
    charged = sim.stats()["credits_charged"]
    assert five_h["usage"] == 2000 and five_h["currentValue"] == charged / 1000
    assert [r.used_milli for r in parse_zai(data)] == [charged, charged]
    assert zai_key_kind(data) == ("credits", "lite")
