"""Presets must match provider-facts.md, and the unit helpers must never round up a budget."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from scheduler.quota.plans import (
    PRESETS,
    Account,
    Plan,
    Policy,
    Window,
    get_preset,
    parse_duration_ms,
    to_milli,
)

HOUR_MS = 3_600_000
WEEK_MS = 7 * 24 * HOUR_MS
UTC8 = dt.timezone(dt.timedelta(hours=8))


def _windows(name: str) -> dict[str, Window]:
    return {w.name: w for w in get_preset(name).windows}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_dated_and_sourced(name: str) -> None:
    plan = PRESETS[name]
    assert plan.name == name
    assert plan.source.strip()
    assert isinstance(plan.as_of, dt.date)
    assert dt.date(2025, 1, 1) <= plan.as_of <= dt.date.today()


def test_synthetic_is_500_per_rolling_5h_one_per_model() -> None:
    plan = get_preset("synthetic")
    (window,) = plan.windows
    assert (window.kind, window.limit_milli, window.duration_ms) == (
        "rolling",
        500_000,
        5 * HOUR_MS,
    )
    assert plan.concurrency == 1
    assert plan.concurrency_per_model


def test_synthetic_v3_regenerates_5_percent_every_15_minutes() -> None:
    (window,) = get_preset("synthetic-v3").windows
    assert window.kind == "regenerating"
    assert window.limit_milli == 500_000
    assert window.tick_ms == 15 * 60_000
    assert window.tick_percent == 5.0
    assert window.regen_milli == 25_000  # 25 requests per tick


def test_synthetic_credits_adds_24_usd_weekly() -> None:
    windows = _windows("synthetic-credits")
    credits = windows["weekly_credits"]
    assert (credits.unit, credits.limit_milli, credits.duration_ms) == ("usd", 24_000, WEEK_MS)
    assert (credits.tick_ms, credits.tick_percent) == (202 * 60_000, 2.0)
    assert windows["requests_5h"].limit_milli == 500_000


@pytest.mark.parametrize(
    ("name", "five_hours", "week", "concurrency"),
    [("zai-lite", 80, 400, 1), ("zai-pro", 400, 2000, 1), ("zai-max", 1600, 8000, 5)],
)
def test_zai_coding_tiers(name: str, five_hours: int, week: int, concurrency: int) -> None:
    plan = get_preset(name)
    by_duration = {w.duration_ms: w for w in plan.windows}
    assert set(by_duration) == {5 * HOUR_MS, WEEK_MS}
    assert by_duration[5 * HOUR_MS].limit_milli == to_milli(five_hours)
    assert by_duration[WEEK_MS].limit_milli == to_milli(week)
    assert all(w.kind == "rolling" for w in plan.windows)
    assert plan.provider == "zai"
    assert plan.concurrency == concurrency


def test_zai_developer_has_no_window_and_no_cap() -> None:
    plan = get_preset("zai-developer")
    assert plan.windows == ()
    assert plan.concurrency is None


def test_unknown_preset_lists_known_ones() -> None:
    with pytest.raises(KeyError, match=r"zai-ultra.*synthetic.*zai-lite"):
        get_preset("zai-ultra")


def test_packs_scale_limits_regen_and_concurrency() -> None:
    plan = get_preset("synthetic-v3").scaled(3)
    (window,) = plan.windows
    assert window.limit_milli == 1_500_000
    assert window.regen_milli == 75_000
    assert window.duration_ms == 5 * HOUR_MS
    assert plan.concurrency == 3
    assert get_preset("zai-developer").scaled(4).concurrency is None
    assert get_preset("zai-pro").scaled(1) == get_preset("zai-pro")


def test_account_effective_plan_uses_packs() -> None:
    account = Account(
        name="synth",
        provider="synthetic",
        base_url="https://api.synthetic.new/openai/v1",
        api_key_env="SYNTHETIC_API_KEY",
        plan=get_preset("synthetic"),
        packs=2,
    )
    assert account.effective_plan.windows[0].limit_milli == 1_000_000
    assert account.effective_plan.concurrency == 2


def test_milli_units() -> None:
    assert to_milli(0.1) == 100
    assert to_milli(1) == 1000
    assert to_milli(24) == 24_000
    assert to_milli(0) == 0
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            to_milli(bad)


@pytest.mark.parametrize(
    ("given_", "ms"),
    [
        (90, 90_000),
        (0.5, 500),
        ("90", 90_000),
        ("90s", 90_000),
        ("250ms", 250),
        ("15m", 900_000),
        ("5h", 5 * HOUR_MS),
        ("1.5h", 5_400_000),
        ("7d", WEEK_MS),
        ("1w", WEEK_MS),
        (" 5h ", 5 * HOUR_MS),
    ],
)
def test_parse_duration(given_: object, ms: int) -> None:
    assert parse_duration_ms(given_) == ms


@pytest.mark.parametrize("bad", ["5 hours", "5y", "", "-5s", 0, -1, True, None, [5], float("inf")])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration_ms(bad)


def test_window_friendly_forms() -> None:
    window = Window.model_validate(
        {
            "name": "w",
            "limit": 500,
            "duration": "5h",
            "kind": "regenerating",
            "tick": "15m",
            "tick_percent": 5,
        }
    )
    assert (window.limit_milli, window.duration_ms, window.tick_ms) == (
        500_000,
        5 * HOUR_MS,
        900_000,
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"limit": [1], "duration": "5h"}, "'limit': expected a number"),
        ({"limit": True, "duration": "5h"}, "'limit': expected a number"),
        ({"limit": 0, "duration": "5h"}, "'limit': a limit must be positive"),
        ({"limit": 5, "duration": "5 hours"}, "'duration': expected a duration"),
        ({"limit": 5, "limit_milli": 5000, "duration": "5h"}, "not both"),
        ({"limit": 5, "duration": "5h", "kind": "regenerating"}, "needs both 'tick'"),
    ],
)
def test_window_errors_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Window.model_validate({"name": "w", **data})


def test_policy_caps_floor() -> None:
    policy = Policy(headroom=0.1, pr_share=0.2, reserve=0.3)
    assert policy.caps(500_000) == (450_000, 300_000, 100_000)
    assert Policy().caps(1001) == (1001, 1001, 1001)
    assert Policy(headroom=0.3333).caps(1000) == (666, 666, 1000)


@pytest.mark.parametrize(
    "fields",
    [
        {"headroom": 0.5, "reserve": 0.5},
        {"headroom": 0.7, "reserve": 0.4},
        {"headroom": 1.0},
        {"pr_share": 0},
        {"pr_share": 1.5},
        {"reserve": -0.1},
    ],
)
def test_policy_rejects(fields: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        Policy.model_validate(fields)


@given(
    limit=st.integers(min_value=1, max_value=10**9),
    headroom=st.floats(min_value=0, max_value=0.49),
    reserve=st.floats(min_value=0, max_value=0.49),
    share=st.floats(min_value=0.01, max_value=1),
)
def test_policy_caps_never_exceed_the_limit(
    limit: int, headroom: float, reserve: float, share: float
) -> None:
    hi, lo, pr = Policy(headroom=headroom, reserve=reserve, pr_share=share).caps(limit)
    assert 0 <= lo <= hi <= limit
    assert 0 <= pr <= limit


def test_glm5_costs_3x_in_peak_hours_and_2x_off_peak() -> None:
    plan = get_preset("zai-pro")
    assert plan.cost_milli("glm-5", dt.datetime(2026, 3, 2, 15, 0, tzinfo=UTC8)) == 3000
    assert plan.cost_milli("glm-5", dt.datetime(2026, 3, 2, 20, 0, tzinfo=UTC8)) == 2000
    # The same instants given in UTC: 07:00 UTC is 15:00 in Beijing.
    assert plan.cost_milli("glm-5.1", dt.datetime(2026, 3, 2, 7, 0, tzinfo=dt.UTC)) == 3000
    assert plan.cost_milli("glm-5.1", dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)) == 2000
    # Peak is [14:00, 18:00) local.
    assert plan.cost_milli("glm-5", dt.datetime(2026, 3, 2, 14, 0, tzinfo=UTC8)) == 3000
    assert plan.cost_milli("glm-5", dt.datetime(2026, 3, 2, 18, 0, tzinfo=UTC8)) == 2000
    assert plan.cost_milli("glm-4.6", dt.datetime(2026, 3, 2, 15, 0, tzinfo=UTC8)) == 1000


def test_synthetic_flash_weighs_a_tenth() -> None:
    plan = get_preset("synthetic")
    assert plan.cost_milli("hf:google/gemini-flash") == 100
    assert plan.cost_milli("hf:zai-org/GLM-4.6") == 1000


def test_plan_rejects_duplicate_window_names() -> None:
    window = {"name": "w", "limit": 1, "duration": "1h"}
    with pytest.raises(ValidationError, match="unique"):
        Plan.model_validate(
            {
                "name": "p",
                "provider": "x",
                "windows": [window, window],
                "source": "t",
                "as_of": "2026-01-01",
            }
        )
