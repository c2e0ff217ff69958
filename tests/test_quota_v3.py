"""The provider's own count on today's metering: a V3 key's `CREDIT_LIMIT` counts read
exactly, the key's kind told from its quota answer (and said where a person looks), and
Synthetic's empty `/v2/quotas` answer read as "no reading", never as "nothing used"."""

from __future__ import annotations

import logging

import httpx
import pytest
import redis as redis_py
from test_provider_client import ENV, Recorder, make_account

from scheduler.config import Settings
from scheduler.ops.inspection import snapshot
from scheduler.quota.limiter import Limiter
from scheduler.quota.plans import Plan, get_preset
from scheduler.quota.tokenbound import InputBound
from scheduler.sandbox import DEV_KEY, ProviderConfig, create_provider_app, serve_in_thread
from scheduler.state.keys import Keys
from scheduler.webhook.gauges import CreditFamilies
from workers.providers.client import ProviderClient
from workers.providers.keycheck import check_keys
from workers.providers.quota import QuotaPoller, QuotaReading, apply_readings, parse_zai

NOW = 1_788_900_000_000  # 2026-09-08T20:40:00Z
RESET = NOW + 3_600_000
ZAI = "https://api.z.test/api/coding/paas/v4"


def credit_entry(unit: int, used: float, allowance: float, pct: int) -> dict[str, object]:
    return {
        "type": "CREDIT_LIMIT",
        "unit": unit,
        "number": 5 if unit == 3 else 1,
        "usage": allowance,
        "currentValue": used,
        "remaining": allowance - used,
        "percentage": pct,
        "nextResetTime": RESET,
    }


def v3_answer(level: str = "pro") -> dict[str, object]:
    limits = [credit_entry(3, 1438, 12_000, 11), credit_entry(6, 20_000.5, 60_000, 33)]
    time_limit = {"type": "TIME_LIMIT", "unit": 5, "number": 1, "percentage": 2}
    return {"data": {"limits": [*limits, time_limit], "level": level}, "success": True}


def v2_answer() -> dict[str, object]:
    limits = [{"type": "TOKENS_LIMIT", "unit": 3, "percentage": 40, "nextResetTime": RESET}]
    return {"data": {"limits": limits}, "success": True}


def test_credit_limit_counts_are_read_exactly_not_the_rounded_percentage() -> None:
    assert parse_zai(v3_answer()) == [
        QuotaReading("credits:3", 1_438_000, 12_000_000, RESET, "credits"),
        QuotaReading("credits:6", 20_000_500, 60_000_000, RESET, "credits"),
    ]


class Clock:
    def __call__(self) -> int:
        return NOW


def test_credit_readings_sync_the_credit_windows(redis: redis_py.Redis, unique: str) -> None:
    limiter = Limiter(redis, unique, get_preset("zai-pro-v3"), clock=Clock())
    synced = apply_readings(limiter, parse_zai(v3_answer()), NOW)
    assert [(s.plan_window, s.used_milli, s.moved) for s in synced] == [
        ("credits_5h", 1_438_000, True),
        ("credits_week", 20_000_500, True),
    ]
    # 1,438 of 12,000 is 11.98 %: the percentage (11) would have said 1,320.
    assert [w.used for w in limiter.status().windows] == [1_438_000, 20_000_500]


def poller(
    redis: redis_py.Redis, name: str, plan: Plan, handler: object, provider: str = "zai"
) -> tuple[QuotaPoller, Limiter]:
    base = ZAI if provider == "zai" else "https://api.syn.test/openai/v1"
    account = make_account(name, provider=provider, base_url=base, plan=plan)
    client = ProviderClient(account, env=ENV, transport=Recorder(handler).transport)  # type: ignore[arg-type]
    limiter = Limiter(redis, name, plan, clock=Clock())
    return QuotaPoller(client, limiter), limiter


@pytest.mark.parametrize(
    ("plan", "answer", "detected", "suggested"),
    [
        ("zai-pro", v3_answer("pro"), "credits", "zai-pro-v3"),
        ("zai-lite-v3", v2_answer(), "prompts", "zai-lite"),
        ("zai-max-v3", v3_answer("max"), "credits", None),
    ],
)
def test_the_key_is_told_from_its_quota_answer(
    redis: redis_py.Redis,
    unique: str,
    caplog: pytest.LogCaptureFixture,
    plan: str,
    answer: dict[str, object],
    detected: str,
    suggested: str | None,
) -> None:
    caplog.set_level(logging.WARNING)
    quota, _ = poller(redis, unique, get_preset(plan), lambda r: httpx.Response(200, json=answer))
    quota.poll(NOW)
    found = quota.readings.read().detection
    assert found is not None
    assert (found.metering, found.suggested, found.mismatch) == (
        detected,
        suggested,
        suggested is not None,
    )
    warned = [r.getMessage() for r in caplog.records if "use plan" in r.getMessage()]
    assert warned == ([] if suggested is None else [warned[0]])
    if suggested:
        assert f"use plan = {suggested!r}" in warned[0] and f"plan {plan!r}" in warned[0]


def test_a_v3_key_on_a_v2_plan_still_feeds_its_windows_as_fractions(
    redis: redis_py.Redis, unique: str
) -> None:
    quota, limiter = poller(
        redis, unique, get_preset("zai-pro"), lambda r: httpx.Response(200, json=v3_answer())
    )
    quota.poll(NOW)
    # 1,438 / 12,000 of the 400-prompt window, rounded up: 47.94 prompts.
    assert limiter.status().windows[0].used == 47_934


def test_an_empty_synthetic_answer_is_no_reading_and_changes_nothing(
    redis: redis_py.Redis, unique: str
) -> None:
    quota, limiter = poller(
        redis,
        unique,
        get_preset("synthetic"),
        lambda r: httpx.Response(200, json={}),
        provider="synthetic",
    )
    limiter.acquire(7000, "pr", "r1", 60_000)
    before = limiter.status()
    assert quota.poll(NOW) == []
    assert limiter.status() == before  # not "nothing used": nothing changed
    view = quota.readings.read()
    assert view.empty == {"GET /v2/quotas": NOW} and view.windows == {}


def test_readings_say_where_and_when_each_window_was_read(
    redis: redis_py.Redis, unique: str
) -> None:
    """Against the provider simulator: a Synthetic key whose `/v2/quotas` answers `{}`
    (as API keys get since about 2026-09-14) while every completion's header reads."""
    plan = get_preset("synthetic")
    config = ProviderConfig(flavour="synthetic", plan=plan, quota_endpoint_empty=True)
    with serve_in_thread(create_provider_app(config)) as server:
        base = f"{server.url}/openai/v1"
        account = make_account(unique, base_url=base, key_env="RQ_SIM_KEY", plan=plan)
        client = ProviderClient(account, env={"RQ_SIM_KEY": DEV_KEY})
        limiter = Limiter(redis, unique, plan)
        quota = QuotaPoller(client, limiter)
        now = limiter.status().now_ms
        assert quota.poll(now) == []
        assert [w.used for w in limiter.status().windows] == [0]
        view = quota.readings.read()
        assert list(view.empty) == ["GET /v2/quotas"] and view.windows == {}
    settings = Settings(accounts=[account])
    snap = snapshot(redis, settings)
    shown = snap.accounts[0].provider_view
    assert shown is not None and [e.source for e in shown.empty_answers] == ["GET /v2/quotas"]


def test_metrics_show_the_mismatch_the_readings_the_bound_and_deferrals(
    redis: redis_py.Redis, unique: str
) -> None:
    quota, _ = poller(
        redis, unique, get_preset("zai-pro"), lambda r: httpx.Response(200, json=v3_answer())
    )
    quota.poll(NOW)
    InputBound(redis, unique, key_prefix="reviewq").record("glm-5.1", 1000, 1300, 4000)
    keys = Keys(f"t:{unique}")
    redis.hincrby(keys.deferrals, unique, 2)
    families = CreditFamilies()
    families.add(unique, "reviewq", redis, keys)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for m in families.all()
        for s in m.samples
    }
    mismatch = ("configured", "prompts"), ("detected", "credits"), ("suggested", "zai-pro-v3")
    assert samples[("reviewq_account_plan_mismatch", (("account", unique), *mismatch))] == 1
    source = ("source", "GET /api/monitor/usage/quota/limit")
    read = ("reviewq_account_window_reading_timestamp_seconds", ("account", unique))
    assert samples[(read[0], (read[1], source, ("window", "prompts_5h")))] == NOW / 1000
    calls = ("reviewq_input_bound_calls_total", (("account", unique), ("model", "glm-5.1")))
    assert samples[calls] == 1
    assert samples[("reviewq_offpeak_deferrals_total", (("account", unique),))] == 2


def test_reviewq_worker_checks_every_zai_key_at_start(redis_url: str, unique: str) -> None:
    """A V3 key under the V2 `zai-pro` preset: found before any review runs."""
    account = make_account(unique, provider="zai", base_url=ZAI, plan=get_preset("zai-pro"))
    settings = Settings(redis_url=redis_url, accounts=[account])
    rec = Recorder(lambda r: httpx.Response(200, json=v3_answer()))
    [(name, found)] = check_keys(settings, env=ENV, key_prefix=unique, transport=rec.transport)
    assert name == unique and found.suggested == "zai-pro-v3"
    assert rec.count("/quota/limit") == 1 and rec.count() == 0  # no completion sent
