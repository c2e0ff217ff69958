"""Credit plans' arithmetic, checked against values worked out by hand: prices per
10,000 tokens, the time-of-day factor of a request's arrival, and the V3 presets."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from scheduler.quota.plans import PRESETS, Account, OffPeakPolicy, TimeFactors, get_preset
from scheduler.quota.pricing import ModelPrice, TokenCounts, credits_milli
from scheduler.quota.timeofday import Calendar
from workers.providers.classify import Usage
from workers.providers.client import CallBound, request_cost, usage_cost

GLM_51 = ModelPrice(pattern="glm-5.1", input=6.9, cached_input=1.7, output=24)
V3 = TimeFactors()  # the V3 presets' factors: Mon-Fri 14:00-18:00 UTC+8 at 1x, else 0.5x
# Tuesday 2026-12-08: peak is 06:00-10:00 UTC.
PEAK_START = dt.datetime(2026, 12, 8, 6, 0, tzinfo=dt.UTC)
PEAK_END = dt.datetime(2026, 12, 8, 10, 0, tzinfo=dt.UTC)
SEC = dt.timedelta(seconds=1)


def at(hour: int, minute: int = 0, day: int = 8) -> dt.datetime:
    return dt.datetime(2026, 12, day, hour, minute, tzinfo=dt.UTC)


def account(plan: str = "zai-lite-v3") -> Account:
    return Account(
        name="zai",
        provider="zai",
        base_url="https://api.z.ai/api/coding/paas/v4",
        api_key_env="ZAI_API_KEY",
        plan=get_preset(plan),
    )


def test_credits_by_hand() -> None:
    # 8,000 input (2,000 of them cached) and 1,000 output tokens of GLM-5.1:
    # (6,000 x 6.9 + 2,000 x 1.7 + 1,000 x 24) / 10,000 = (41,400 + 3,400 + 24,000)
    # / 10,000 = 6.88 credits = 6,880 milli-credits; off-peak half: 3,440.
    tokens = TokenCounts(input=8000, cached=2000, output=1000)
    assert credits_milli(GLM_51, tokens, 1.0) == 6880
    assert credits_milli(GLM_51, tokens, 0.5) == 3440
    # 1 input token at 6.9 / 10,000 = 0.00069 credits = 0.69 milli: rounded up to 1.
    assert credits_milli(GLM_51, TokenCounts(input=1), 1.0) == 1
    # The 2x / 0.67x report: 0.67 x 6,880 = 4,609.6 -> 4,610.
    assert credits_milli(GLM_51, tokens, 0.67) == 4610


def test_every_price_is_exact_decimal_not_binary() -> None:
    # 3 x 0.1 is 0.30000000000000004 in binary: 10,000 tokens at 0.1 is exactly 100 milli.
    price = ModelPrice(pattern="m", input=0.1, cached_input=0.1, output=0.1)
    assert credits_milli(price, TokenCounts(input=10_000), 1.0) == 100


def test_peak_hours_in_utc_plus_8() -> None:
    assert not V3.is_peak(PEAK_START - SEC)
    assert V3.is_peak(PEAK_START)
    assert V3.is_peak(PEAK_END - SEC)
    assert not V3.is_peak(PEAK_END)
    assert V3.factor_at(at(7)) == 1.0 and V3.factor_at(at(3)) == 0.5
    # Saturday 2026-12-12 at 15:00 UTC+8 is off-peak: weekends are off-peak all day.
    assert not V3.is_peak(at(7, day=12))


def test_a_grant_within_the_arrival_margin_of_a_boundary_pays_the_higher_factor() -> None:
    margin = dt.timedelta(milliseconds=1000)
    before = PEAK_START - dt.timedelta(milliseconds=500)
    assert V3.factor_between(before, before + margin) == 1.0  # may arrive in peak
    assert V3.factor_between(before - margin, before) == 0.5  # all of it off-peak
    end = PEAK_END - dt.timedelta(milliseconds=500)
    assert V3.factor_between(end, end + margin) == 1.0  # may still arrive in peak
    assert V3.factor_between(PEAK_END, PEAK_END + margin) == 0.5


def test_boundaries_and_the_next_off_peak_start() -> None:
    assert V3.next_boundary(at(3)) == PEAK_START
    assert V3.next_boundary(PEAK_START) == PEAK_END
    assert V3.off_peak_start(at(7)) == PEAK_END
    assert V3.off_peak_start(at(3)) == at(3)
    # Friday's peak ends at 10:00 UTC; the next peak is Monday's.
    friday = at(11, day=11)
    assert V3.next_boundary(friday) == at(6, day=14)


def test_time_factors_are_configurable_and_checked() -> None:
    other = TimeFactors(peak_factor=2.0, off_peak_factor=0.67, peak_start="09:00", peak_end="12:00")
    assert other.factor_at(at(2)) == 2.0  # 10:00 UTC+8
    with pytest.raises(ValidationError, match="before peak_end"):
        TimeFactors(peak_start="18:00", peak_end="14:00")
    with pytest.raises(ValidationError, match="weekdays"):
        TimeFactors(peak_days=(7,))


def test_offpeak_policy_reads_durations() -> None:
    assert OffPeakPolicy(max_defer="6h").max_defer_ms == 6 * 3_600_000  # type: ignore[call-arg]
    assert OffPeakPolicy.model_validate({"max_defer": "90m"}).max_defer_ms == 5_400_000


def test_calendar_maps_the_limiters_clock_both_ways() -> None:
    start = PEAK_START.timestamp() * 1000
    calendar = Calendar(real_ms=1_000_000, calendar_ms=round(start), scale=300)
    assert calendar.at(1_000_000) == PEAK_START
    assert calendar.at(1_000_000 + 48_000) == PEAK_END  # 48 real s = 4 simulated h
    assert calendar.real_ms_at(PEAK_END) == 1_048_000
    assert calendar.span(200) == dt.timedelta(seconds=60)


@pytest.mark.parametrize(
    ("name", "five_h", "week"),
    [
        ("zai-lite-v3", 2000, 10_000),
        ("zai-pro-v3", 12_000, 60_000),
        ("zai-max-v3", 28_000, 140_000),
    ],
)
def test_v3_presets(name: str, five_h: int, week: int) -> None:
    plan = get_preset(name)
    assert [(w.name, w.limit_milli, w.unit) for w in plan.windows] == [
        ("credits_5h", five_h * 1000, "credits"),
        ("credits_week", week * 1000, "credits"),
    ]
    assert plan.metering == "credits" and plan.on_sale
    rates = {m: plan.price_for(m) for m in ("glm-5.1", "glm-5.2", "glm-5.3")}
    assert {(p.input, p.cached_input, p.output) for p in rates.values() if p} == {(6.9, 1.7, 24)}
    assert plan.price_for("glm-4.7") == ModelPrice(
        pattern="glm-4.7", input=4.6, cached_input=1.2, output=16
    )
    assert plan.price_for("glm-4.6") is None
    assert plan.time_factors is not None and plan.default_model == "glm-5.1"
    same = {"source", "as_of"}
    assert plan.time_factors.model_dump(exclude=same) == V3.model_dump(exclude=same)
    assert plan.time_factors.as_of == dt.date(2026, 12, 7) and plan.time_factors.source


def test_v2_prompt_presets_keep_their_names_but_are_no_longer_sold() -> None:
    for name in ("zai-lite", "zai-pro", "zai-max"):
        plan = PRESETS[name]
        assert plan.metering == "requests" and not plan.on_sale
        assert f"{name}-v3" in plan.notes


def test_request_cost_reserves_the_bound_at_the_arrival_factor() -> None:
    # 8,000 estimated input x bound 2.0 = 16,000 tokens, and 2,048 of output:
    # (16,000 x 6.9 + 2,048 x 24) / 10,000 = (110,400 + 49,152) / 10,000 = 15.9552
    # credits at peak; off-peak 7.9776 credits.
    bound = CallBound(input=16_000, output=2048, estimated=8000)
    peak = request_cost(account(), "glm-5.1", at(7), bound=bound)
    assert peak == {"credits_5h": 15_956, "credits_week": 15_956}
    off = request_cost(account(), "glm-5.1", at(3), bound=bound)
    assert off == {"credits_5h": 7978, "credits_week": 7978}
    edge = PEAK_START - SEC
    paid = request_cost(account(), "glm-5.1", edge, bound=bound, until=edge + 2 * SEC)
    assert paid == peak


def test_usage_cost_settles_what_usage_says_at_the_grants_factor() -> None:
    usage = Usage(prompt_tokens=9000, completion_tokens=600, cached_tokens=1000)
    # (8,000 x 6.9 + 1,000 x 1.7 + 600 x 24) / 10,000 = (55,200 + 1,700 + 14,400)
    # / 10,000 = 7.13 credits at peak.
    assert usage_cost(account(), "glm-5.1", usage, at(7)) == {
        "credits_5h": 7130,
        "credits_week": 7130,
    }
    assert usage_cost(account(), "glm-5.1", Usage(prompt_tokens=1), at(7)) is None


def test_reviewq_plans_says_which_plans_new_subscribers_can_buy() -> None:
    import json

    from click.testing import CliRunner

    from scheduler.cli.main import main

    data = json.loads(CliRunner().invoke(main, ["plans", "--json"]).output)
    on_sale = {p["name"]: p["on_sale"] for p in data["presets"]}
    assert not on_sale["zai-pro"] and on_sale["zai-pro-v3"] and on_sale["synthetic"]
    table = CliRunner().invoke(main, ["plans"], env={"COLUMNS": "250"}).output
    assert "On sale" in table and "x0.5" in table and "glm-4.7: 4.6 / 1.2 / 16" in table
