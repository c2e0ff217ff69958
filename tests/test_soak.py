"""`reviewq soak`, shortened to half a simulated day: it samples, and it checks.

The week-long run and its flat-memory bar are a documented command
(`reviewq soak scenarios/soak.yaml`), not part of CI.
"""

from __future__ import annotations

import pytest

from scheduler.sim.scenario import Scenario
from scheduler.sim.simulate import client_timeout_s
from scheduler.sim.soak import run_soak
from scheduler.state.records import Retention

pytestmark = pytest.mark.slow


def test_a_short_soak_samples_memory_and_checks_every_pr(redis_url: str) -> None:
    scenario = Scenario.model_validate(
        {
            "time_scale": 3000,
            "duration": "12h",
            "workers": 2,
            "retention": "2h",
            "accounts": [{"name": "zai", "plan": "zai-pro"}],
            "latency": {"median": "20s", "p95": "60s"},
            "generators": [
                {
                    "prefix": "acme/small",
                    "count": 12,
                    "files": 2,
                    "lines_per_file": 60,
                    "start": 0,
                    "every": "30m",
                },
            ],
        }
    )
    result = run_soak(scenario, warmup_s=3 * 3600, every_s=900)
    figures = result["soak"]
    assert figures["samples"] >= 10
    assert figures["prs_ended"] == figures["prs"] == 12
    assert figures["messages_checked"] >= 12
    assert figures["messages_not_terminal"] == 0
    assert result["windows_over_limit"] == []
    assert figures["redis_state_bytes_warm"] > 0 and figures["redis_state_bytes_end"] > 0
    assert figures["worker_rss_kb"], "worker processes were sampled"
    for trend in figures["worker_rss_kb"].values():
        assert trend["warm"] > 10_000  # a Python process: tens of MB, in kB


def test_a_scenarios_retention_caps_every_span_then_scales() -> None:
    """Reviews kept 30 days and failed jobs 7 would grow all through a week-long soak;
    the scenario's retention caps them too, so memory plateaus within warm-up."""
    day = Retention().within(86_400)
    assert day == Retention(pr_s=86_400, result_s=3_600, failure_s=86_400, review_s=86_400)
    assert day.scaled(3000) == Retention(pr_s=29, result_s=1, failure_s=29, review_s=29)
    assert Retention().within(10**9) == Retention()


def test_a_timeout_fault_holds_a_slot_for_scaled_time_with_a_real_floor() -> None:
    """A fault outlasting a real 30 s client timeout held Z.AI's one slot for a
    simulated day at x3000; the timeout is now the scenario's, compressed."""
    base = {
        "duration": "1d",
        "accounts": [{"name": "zai", "plan": "zai-pro"}],
        "prs": [{"id": "o/r#1", "at": 0, "files": 1, "lines_per_file": 10}],
    }
    slow = Scenario.model_validate({**base, "time_scale": 10})
    fast = Scenario.model_validate({**base, "time_scale": 3000})
    custom = Scenario.model_validate(
        {**base, "time_scale": 60, "faults": {"timeout_rate": 0.1, "client_timeout": "10m"}}
    )
    assert client_timeout_s(slow) == 30.0  # 300 simulated seconds
    assert client_timeout_s(fast) == 1.0  # 0.1 s would trip on real overhead
    assert client_timeout_s(custom) == 10.0
