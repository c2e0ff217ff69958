"""`simulate` reports the adaptive reserve over time (docs/reserve.md): the `reserve`
object of `--json`, the reserve check against the reserve in force at each grant, and
the line the HTML report draws. The end-to-end run is real: Redis, RQ workers, the
waker's controller, the Lua limiter and the provider simulator as the referee."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.quota.reserve import reserve_milli
from scheduler.sim.html_report import render_html
from scheduler.sim.reserves import ReserveTimeline
from scheduler.sim.scenario import Scenario
from scheduler.sim.simulate import run_scenario

# One 60-request window; share 6, so a 1-message PR is small and the 66-message one is
# large; five small ones at once are a burst of 5, above the floor's 3. The floor and
# ceiling are fractions of the limit, as the config takes them.
FLOOR, CEILING, LIMIT = 0.05, 0.2, 60
SCENARIO: dict[str, Any] = {
    "time_scale": 600,
    "duration": "8h",
    "workers": 3,
    "policy": "fair",
    "per_pr_inflight": 2,
    "accounts": [
        {
            "name": "synth",
            "plan": {
                "windows": [{"name": "requests_5h", "limit": LIMIT, "duration": "5h"}],
                "concurrency": 1,
            },
            "policy": {
                "headroom": 0.0,
                "pr_share": 0.1,
                "reserve": CEILING,
                "adaptive": {"floor": FLOOR, "ceiling": CEILING, "horizon": "2h"},
            },
        }
    ],
    "latency": {"median": "20s", "p95": "60s"},
    "max_message_tokens": 4000,
    "prs": [{"id": "acme/api#1", "at": 0, "files": 66, "lines_per_file": 300}],
    "generators": [
        {"prefix": "acme/web", "count": 5, "files": 2, "lines_per_file": 40, "start": "1h"},
    ],
}


def test_candidates_are_the_reserve_in_force_at_a_time() -> None:
    """Before the first change: none (the configured reserve applies); between changes:
    the last one before; in the very millisecond of a change: that one and the one
    before (the trace cannot order a grant and a change within one ms)."""
    tl = ReserveTimeline([100, 200, 200, 300], [{"w": 1}, {"w": 2}, {"w": 3}, {"w": 4}])
    assert tl.candidates("w", 99) == []
    assert tl.candidates("w", 100) == [1]
    assert tl.candidates("w", 150) == [1]
    assert sorted(tl.candidates("w", 200)) == [1, 2, 3]
    assert tl.candidates("w", 250) == [3]
    assert tl.candidates("w", 10**9) == [4]
    assert tl.candidates("other", 250) == [0]  # a window a change left out: 0


@pytest.fixture(scope="module")
def result(redis_url: str) -> dict[str, Any]:
    return run_scenario(Scenario.model_validate(SCENARIO), redis_url=redis_url)


@pytest.mark.slow
def test_json_reports_the_reserve_over_time(result: dict[str, Any]) -> None:
    """The reserve starts at the floor (no demand yet), stays there while only the
    large PR is queued (it never spends the reserve, so it is no demand), rises only
    once the small PRs arrive, and never leaves [floor, ceiling]; the summary's least
    and most are the history's."""
    low, high = (reserve_milli(LIMIT * 1000, 0.0, f) / 1000 for f in (FLOOR, CEILING))
    synth = result["reserve"]["synth"]
    series = [h["reserve"]["requests_5h"] for h in synth["history"]]
    times = [h["t_s"] for h in synth["history"]]
    assert series[0] == low and times == sorted(times)
    assert all(low <= v <= high for v in series), series
    small = min(p["arrived_s"] for p in result["prs"] if p["files"] <= 10)
    rises = [t for t, v in zip(times, series, strict=True) if v > low]
    assert rises and rises[0] >= small - 1, (rises[:1], small)
    stats = synth["windows"]["requests_5h"]
    assert (stats["min"], stats["max"]) == (min(series), max(series))
    assert low <= stats["mean"] <= high and stats["limit"] == LIMIT


@pytest.mark.slow
def test_the_guarantees_hold_against_the_reserve_in_force(result: dict[str, Any]) -> None:
    check = result["reserve_check"]
    assert check["over_share_grants"] > 0 and check["violations"] == 0, check
    (account,) = result["accounts"]
    assert account["provider_429"] == 0
    for w in account["windows"]:
        assert w["max_used_in_any_window"] <= w["spendable"], w


@pytest.mark.slow
def test_the_html_report_draws_the_reserve(result: dict[str, Any]) -> None:
    page = render_html(result)
    assert "spendable less the adaptive reserve" in page
