"""Provider quota readings: every shape parsed, and the local view only grows stricter."""

from __future__ import annotations

import datetime as dt
import json
import logging

import httpx
import pytest
import redis as redis_py
from test_provider_client import ENV, KEY, Recorder, make_account

from scheduler.quota.limiter import Grant, Limiter
from scheduler.quota.plans import Plan, Window, get_preset
from workers.providers.classify import Classified, ResponseClass
from workers.providers.client import ProviderClient, ProviderResult, request_cost
from workers.providers.quota import (
    DEFAULT_POLL_INTERVAL_MS,
    QuotaPoller,
    QuotaReading,
    apply_readings,
    default_window_map,
    parse_synthetic,
    parse_zai,
)

NOW = 1_788_900_000_000  # 2026-09-08T20:40:00Z
TICK = "2026-09-08T20:55:00Z"
TICK_MS = 1_788_900_900_000
REGEN = "2026-09-08T23:00:00+00:00"
REGEN_MS = 1_788_908_400_000
ZAI_RESET_MS = NOW + 3_600_000


class Clock:
    def __init__(self, now: int = NOW) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def newer(remaining: float = 400, limited: bool = False, credits: str = "$19.49") -> dict:
    return {
        "rollingFiveHourLimit": {
            "remaining": remaining,
            "max": 500,
            "limited": limited,
            "nextTickAt": TICK,
            "tickPercent": 5,
        },
        "weeklyTokenLimit": {
            "percentRemaining": 81.2,
            "maxCredits": "$24.00",
            "remainingCredits": credits,
            "nextRegenAt": REGEN,
            "nextRegenCredits": "$0.48",
        },
    }


def zai_body(*limits: dict) -> dict:
    return {"code": 200, "msg": "ok", "data": {"limits": list(limits)}, "success": True}


def zai_limit(unit: int, pct: float | None, kind: str = "TOKENS_LIMIT", **extra: object) -> dict:
    entry: dict[str, object] = {"type": kind, "unit": unit, "nextResetTime": ZAI_RESET_MS}
    if pct is not None:
        entry["percentage"] = pct
    return {**entry, **extra}


def test_synthetic_newer_shape_gives_requests_and_credits() -> None:
    readings = parse_synthetic(newer())
    assert readings == [
        QuotaReading("rollingFiveHourLimit", 100_000, 500_000, TICK_MS, "requests"),
        QuotaReading("weeklyTokenLimit", 4_510, 24_000, REGEN_MS, "usd"),
    ]


def test_synthetic_header_text_and_bytes_parse_the_same() -> None:
    text = json.dumps(newer())
    assert parse_synthetic(text) == parse_synthetic(text.encode()) == parse_synthetic(newer())


def test_synthetic_limited_means_all_used_whatever_remaining_says() -> None:
    [rolling, _] = parse_synthetic(newer(remaining=3, limited=True))
    assert rolling.used_milli == rolling.limit_milli == 500_000


def test_synthetic_fractional_requests_round_up() -> None:
    [rolling, _] = parse_synthetic(newer(remaining=487.3))
    assert rolling.used_milli == 12_700


def test_synthetic_legacy_subscription_shape() -> None:
    body = {"subscription": {"limit": 500, "requests": 123.5, "renewsAt": TICK}}
    assert parse_synthetic(body) == [
        QuotaReading("subscription", 123_500, 500_000, TICK_MS, "requests")
    ]


def test_synthetic_newer_block_wins_over_legacy() -> None:
    body = {**newer(), "subscription": {"limit": 500, "requests": 1, "renewsAt": TICK}}
    assert [r.window for r in parse_synthetic(body)] == ["rollingFiveHourLimit", "weeklyTokenLimit"]


def test_synthetic_credits_as_percent_when_money_is_missing() -> None:
    body = {"weeklyTokenLimit": {"percentRemaining": 75, "nextRegenAt": REGEN}}
    assert parse_synthetic(body) == [
        QuotaReading("weeklyTokenLimit", 25_000, 100_000, REGEN_MS, "percent")
    ]


def test_synthetic_money_with_thousands_separator() -> None:
    body = {"weeklyTokenLimit": {"maxCredits": "$1,024.50", "remainingCredits": "$24.50"}}
    [reading] = parse_synthetic(body)
    assert (reading.used_milli, reading.limit_milli, reading.reset_at_ms) == (
        1_000_000,
        1_024_500,
        None,
    )


@pytest.mark.parametrize(
    "body",
    [
        None,
        "not json",
        [],
        {},
        {"rollingFiveHourLimit": "x"},
        {"rollingFiveHourLimit": {"remaining": 3}},
        {"rollingFiveHourLimit": {"max": 0, "remaining": 0, "nextTickAt": TICK}},
        {"subscription": {"limit": True, "requests": 1}},
        {"weeklyTokenLimit": {"maxCredits": "lots", "remainingCredits": "$1"}},
    ],
)
def test_synthetic_garbage_gives_nothing(body: object) -> None:
    assert parse_synthetic(body) == []


def test_synthetic_missing_remaining_counts_as_all_used() -> None:
    [reading] = parse_synthetic({"rollingFiveHourLimit": {"max": 500, "nextTickAt": TICK}})
    assert reading.used_milli == 500_000


def test_zai_percentages_by_unit_and_time_limit_ignored() -> None:
    body = zai_body(
        zai_limit(5, 10, kind="TIME_LIMIT"),
        zai_limit(3, 42.5),
        zai_limit(6, 100, kind="CREDIT_LIMIT"),
    )
    assert parse_zai(body) == [
        QuotaReading("unit:3", 42_500, 100_000, ZAI_RESET_MS, "percent"),
        QuotaReading("unit:6", 100_000, 100_000, ZAI_RESET_MS, "percent"),
    ]


def test_zai_older_shape_with_counts() -> None:
    entry = zai_limit(3, None, usage=40_000_000, currentValue=10_000_000)
    assert parse_zai(zai_body(entry))[0].used_milli == 25_000


def test_zai_epoch_seconds_reset_and_missing_reset() -> None:
    [a, b] = parse_zai(
        zai_body(
            zai_limit(3, 1, nextResetTime=ZAI_RESET_MS // 1000),
            {**zai_limit(6, 1)} | {"nextResetTime": None},
        )
    )
    assert a.reset_at_ms == ZAI_RESET_MS
    assert b.reset_at_ms is None


@pytest.mark.parametrize(
    "body",
    [
        None,
        {},
        {"data": None},
        {"data": {"limits": "x"}},
        zai_body({"type": "TOKENS_LIMIT", "unit": "3", "percentage": 5}),
        zai_body({"type": "TOKENS_LIMIT", "unit": True, "percentage": 5}),
        zai_body({"type": "TOKENS_LIMIT", "unit": 3}),
        zai_body("junk"),
    ],
)
def test_zai_garbage_gives_nothing(body: object) -> None:
    assert parse_zai(body) == []


def test_default_window_maps() -> None:
    assert default_window_map(get_preset("synthetic")) == {
        "rollingFiveHourLimit": "requests_5h",
        "subscription": "requests_5h",
        "unit:3": "requests_5h",
        "credits:3": "requests_5h",  # a reading of another kind feeds it as a fraction
    }
    assert default_window_map(get_preset("synthetic-credits"))["weeklyTokenLimit"] == (
        "weekly_credits"
    )
    zai = default_window_map(get_preset("zai-pro"))
    assert (zai["unit:3"], zai["unit:6"]) == ("prompts_5h", "prompts_week")
    assert default_window_map(get_preset("zai-developer")) == {}


def limiter_for(redis: redis_py.Redis, name: str, plan: Plan) -> tuple[Limiter, Clock]:
    clock = Clock()
    return Limiter(redis, name, plan, clock=clock), clock


def used(limiter: Limiter) -> dict[str, int]:
    return {w.name: w.used for w in limiter.status().windows}


def test_sync_adopts_only_the_more_pessimistic_number(redis: redis_py.Redis, unique: str) -> None:
    limiter, clock = limiter_for(redis, unique, get_preset("synthetic"))
    for i in range(5):
        grant = limiter.acquire(1000, "pr", f"r{i}", 60_000)
        assert isinstance(grant, Grant)
        limiter.release(grant.lease_id)
    assert used(limiter) == {"requests_5h": 5_000}
    # The provider says fewer were used than we granted: ours stays.
    synced = apply_readings(limiter, parse_synthetic(newer(remaining=498)), NOW)
    assert [(s.plan_window, s.used_milli, s.moved) for s in synced] == [
        ("requests_5h", 2_000, False)
    ]
    assert used(limiter) == {"requests_5h": 5_000}
    # More than we granted (a coding tool on the same key): adopted until the reset.
    apply_readings(limiter, parse_synthetic(newer(remaining=400)), NOW)
    assert used(limiter) == {"requests_5h": 100_000}
    clock.now = TICK_MS
    assert used(limiter) == {"requests_5h": 5_000}


def test_sync_never_uses_a_reset_in_the_past(redis: redis_py.Redis, unique: str) -> None:
    limiter, _ = limiter_for(redis, unique, get_preset("synthetic"))
    past = QuotaReading("rollingFiveHourLimit", 400_000, 500_000, NOW - 1, "requests")
    none = QuotaReading("rollingFiveHourLimit", 400_000, 500_000, None, "requests")
    assert apply_readings(limiter, [past, none], NOW) == []
    assert used(limiter) == {"requests_5h": 0}


def test_sync_regenerating_credits_window(redis: redis_py.Redis, unique: str) -> None:
    limiter, clock = limiter_for(redis, unique, get_preset("synthetic-credits"))
    apply_readings(limiter, parse_synthetic(newer(remaining=500, credits="$0.00")), NOW)
    assert used(limiter) == {"requests_5h": 0, "weekly_credits": 24_000}
    # A request costs at least one milli-dollar there, so spent credits deny it.
    cost = request_cost(make_account(plan=limiter.plan), "m")
    denial = limiter.acquire(cost, "pr", "r", 60_000)
    assert not denial.granted and denial.window == "weekly_credits"
    # The bucket's next tick lands on the provider's nextRegenAt.
    clock.now = REGEN_MS
    assert used(limiter)["weekly_credits"] == 24_000 - 480


def test_percent_readings_scale_to_the_plan_limit(redis: redis_py.Redis, unique: str) -> None:
    limiter, _ = limiter_for(redis, unique, get_preset("zai-pro"))
    apply_readings(limiter, parse_zai(zai_body(zai_limit(3, 50), zai_limit(6, 10))), NOW)
    assert used(limiter) == {"prompts_5h": 200_000, "prompts_week": 200_000}


def test_absolute_count_wins_when_the_plan_limit_is_below_the_providers(
    redis: redis_py.Redis, unique: str
) -> None:
    plan = get_preset("synthetic").model_copy(
        update={"windows": (Window(name="requests_5h", limit=250, duration="5h"),)}
    )
    limiter, _ = limiter_for(redis, unique, plan)
    apply_readings(limiter, parse_synthetic(newer(remaining=300)), NOW)
    # 200 of the provider's 500 is 40 %, i.e. 100 of ours; 200 requests is the stricter.
    assert used(limiter) == {"requests_5h": 200_000}


def test_custom_window_map_and_unmapped_readings(redis: redis_py.Redis, unique: str) -> None:
    plan = Plan(
        name="custom",
        provider="synthetic",
        windows=(Window(name="mine", limit=100, duration="2h"),),
        source="tests",
        as_of=dt.date(2026, 9, 1),
    )
    limiter, _ = limiter_for(redis, unique, plan)
    readings = parse_synthetic(newer(remaining=490, credits="$18.00"))
    assert apply_readings(limiter, readings, NOW) == []
    # Dollars against a requests window: only the fraction (25 %) carries over.
    [synced] = apply_readings(limiter, readings, NOW, {"weeklyTokenLimit": "mine"})
    assert (synced.used_milli, synced.moved) == (25_000, True)
    # Requests against requests: 10 used is stricter than 2 % of our 100.
    [synced] = apply_readings(limiter, readings, NOW, {"rollingFiveHourLimit": "mine"})
    assert (synced.used_milli, synced.moved) == (10_000, False)


def quota_response(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/v2/quotas":
        return httpx.Response(200, json=newer(remaining=450))
    if request.url.path == "/api/monitor/usage/quota/limit":
        return httpx.Response(200, json=zai_body(zai_limit(3, 25)))
    return httpx.Response(404)


def poller_for(
    redis: redis_py.Redis, name: str, provider: str = "synthetic", base: str | None = None
) -> tuple[QuotaPoller, Recorder, Limiter]:
    syn = provider == "synthetic"
    plan = get_preset("synthetic" if syn else "zai-pro")
    base = base or (
        "https://api.syn.test/openai/v1" if syn else "https://api.z.test/api/coding/paas/v4"
    )
    account = make_account(name, provider=provider, base_url=base, plan=plan)
    rec = Recorder(quota_response)
    client = ProviderClient(account, env=ENV, transport=rec.transport)
    limiter, _ = limiter_for(redis, name, plan)
    return QuotaPoller(client, limiter), rec, limiter


def test_poller_schedule_start_interval_and_after_429(redis: redis_py.Redis, unique: str) -> None:
    poller, rec, limiter = poller_for(redis, unique)
    assert poller.interval_ms == DEFAULT_POLL_INTERVAL_MS == 180_000
    assert poller.maybe_poll(NOW) is not None  # worker start
    assert rec.count("/v2/quotas") == 1
    assert used(limiter) == {"requests_5h": 50_000}
    assert poller.maybe_poll(NOW + 1_000) is None
    assert poller.maybe_poll(NOW + 180_000, busy=False) is None  # idle: no polling
    assert poller.maybe_poll(NOW + 180_000) is not None  # busy: every interval
    assert rec.count("/v2/quotas") == 2
    assert poller.maybe_poll(NOW + 181_000) is None
    poller.observe(_result(429), NOW + 182_000)
    assert poller.maybe_poll(NOW + 182_000) is not None  # after any 429
    assert poller.maybe_poll(NOW + 183_000) is None
    assert rec.count("/v2/quotas") == 3
    assert rec.count("/chat/completions") == 0


def test_poller_polls_synthetic_with_bearer_at_the_host_root(
    redis: redis_py.Redis, unique: str
) -> None:
    poller, rec, _ = poller_for(redis, unique)
    poller.poll(NOW)
    [request] = rec.requests
    assert str(request.url) == "https://api.syn.test/v2/quotas"
    assert request.headers["authorization"] == f"Bearer {KEY}"


def test_poller_polls_zai_with_the_raw_key(redis: redis_py.Redis, unique: str) -> None:
    poller, rec, limiter = poller_for(redis, unique, provider="zai")
    [synced] = poller.poll(NOW)
    [request] = rec.requests
    assert str(request.url) == "https://api.z.test/api/monitor/usage/quota/limit"
    assert request.headers["authorization"] == KEY
    assert (synced.plan_window, synced.used_milli) == ("prompts_5h", 100_000)
    assert used(limiter)["prompts_5h"] == 100_000


def test_failed_poll_is_logged_without_the_key_and_not_retried_at_once(
    redis: redis_py.Redis, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    poller, rec, _ = poller_for(redis, unique, base="https://broken.test/v1")
    rec.handler = lambda r: httpx.Response(500, json={"error": f"bad {r.headers['authorization']}"})
    assert poller.maybe_poll(NOW) == []
    assert poller.maybe_poll(NOW + 1) is None
    assert any("quota poll failed" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert KEY not in record.getMessage()


def test_other_providers_have_no_quota_endpoint(redis: redis_py.Redis, unique: str) -> None:
    poller, rec, _ = poller_for(redis, unique)
    poller.client.account = make_account(unique, provider="openai")
    assert poller.poll(NOW) == []
    assert rec.requests == []


def _result(status: int, headers: dict[str, str] | None = None) -> ProviderResult:
    return ProviderResult(
        classified=Classified(ResponseClass.TRANSIENT, str(status), "x"),
        account="a",
        model="m",
        status=status,
        elapsed_ms=1,
        sent=True,
        started_at=dt.datetime.fromtimestamp(NOW / 1000, dt.UTC),
        headers=headers or {},
    )


def test_observe_syncs_every_synthetic_response_429s_included(
    redis: redis_py.Redis, unique: str
) -> None:
    poller, rec, limiter = poller_for(redis, unique)
    header = json.dumps(newer(remaining=0, limited=True))
    [synced] = poller.observe(_result(429, {"x-synthetic-quotas": header}), NOW)
    assert synced.moved and used(limiter) == {"requests_5h": 500_000}
    assert poller.poll_requested
    assert poller.observe(_result(200), NOW) == []
    assert rec.requests == []  # observing never calls out
