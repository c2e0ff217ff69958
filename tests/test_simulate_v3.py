"""`reviewq simulate` on a credit plan, end to end (scenarios/zai-v3-small.yaml, about
30 s): the simulator bills credits with its own tokenizer and calendar, reviewq reserves
bounds and settles, a large PR arriving in peak waits for off-peak while small ones do
not. The long runs behind issue 14's bars are documented commands (docs/providers.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scheduler.sim.scenario import load_scenario
from scheduler.sim.simulate import run_scenario

pytestmark = pytest.mark.slow

SCENARIO = Path(__file__).parent.parent / "scenarios" / "zai-v3-small.yaml"


@pytest.fixture(scope="module")
def result(redis_url: str) -> dict[str, Any]:
    return run_scenario(load_scenario(SCENARIO), redis_url=redis_url)


def test_the_provider_and_reviewq_agree_on_every_credit(result: dict[str, Any]) -> None:
    [account] = result["accounts"]
    assert account["provider_429"] == 0
    [window] = account["windows"]
    assert window["max_used_in_any_window"] <= window["limit"]
    credits = account["credits"]
    assert credits["provider_total"] > 0
    assert abs(credits["difference_pct"]) <= 1
    [bound] = credits["input_bound"]
    assert bound["exceeded"] == 0 and bound["calls"] == account["requests"]


def test_the_large_pr_waits_for_off_peak_and_small_ones_do_not(result: dict[str, Any]) -> None:
    prs = {p["id"]: p for p in result["prs"]}
    big = prs["acme/big#1"]
    # Arrived 06:30 UTC (in peak); waited, parked, for 10:00 UTC: 3.5 h.
    assert big["deferred_s"] == pytest.approx(3.5 * 3600, abs=300)
    assert big["first_started_s"] >= 4.5 * 3600 - 60
    assert all(p["deferred_s"] == 0 for i, p in prs.items() if i != "acme/big#1")
    assert result["accounts"][0]["credits"]["deferrals"] == 1
