"""Chaos 1: SIGKILL a random `reviewq worker` child every few seconds of a busy run.

A killed child's claim lapses and the waker runs its message again under the same
request id (the limiter replays the charge); its lease lapses and frees the slot; its
supervisor starts a replacement. Whatever the child was doing (a provider call,
planning, posting, or nothing) nothing is lost, over-spent or posted twice.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from harness import ChaosResult, Fault, Group, base_scenario, check_invariants, run_chaos

from scheduler.sandbox.localredis import LocalRedis
from scheduler.sim.scenario import Scenario

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]


def _kill_every(scenario: Scenario, every_s: float, until_s: float) -> Fault:
    """SIGKILL a random worker child every `every_s` wall seconds until `until_s`."""
    scale = scenario.time_scale
    return Fault(
        "kill",
        at_s=every_s * scale / 2,
        every_s=every_s * scale,
        until_s=until_s * scale,
        action=lambda chaos: chaos.kill_random_worker() and None,
    )


def _check(name: str, result: ChaosResult, least: int) -> None:
    kills = [e for e in result.events if e["event"] == "SIGKILL worker"]
    doing = Counter(e["doing"] for e in kills)
    check_invariants(result, extra={"kills": len(kills), "killed_while": dict(doing)})
    assert len(kills) >= least, name
    assert doing["msg"] >= 1  # at least one kill landed mid-message


def test_sigkill_a_random_worker_every_few_seconds(
    chaos_redis: LocalRedis, tmp_path: Path, chaos_run: int
) -> None:
    scenario = base_scenario()
    kill = _kill_every(scenario, 2.5, 30)
    result = run_chaos("worker-kill", scenario, redis=chaos_redis, workdir=tmp_path, faults=[kill])
    _check("worker-kill", result, 5)


@pytest.mark.chaos_long
@pytest.mark.timeout(600)
def test_sigkill_soak(chaos_redis: LocalRedis, tmp_path: Path, chaos_run: int) -> None:
    """Two and a half minutes of it: a kill every 2 s while some 300 messages of 40 PRs
    go through five windows, on six workers (two `reviewq worker` hosts)."""
    scenario = base_scenario(
        duration="60h",
        workers=6,
        prs=[
            {"id": "acme/mono#100", "at": 0, "files": 120, "lines_per_file": 300},
            {"id": "acme/mono#200", "at": "10h", "files": 80, "lines_per_file": 300},
        ],
        generators=[
            {
                "prefix": "acme/api",
                "count": 30,
                "files": 4,
                "lines_per_file": 60,
                "start": "20m",
                "every": "40m",
            },
            {
                "prefix": "acme/web",
                "count": 8,
                "files": 10,
                "lines_per_file": 300,
                "start": "1h",
                "every": "2h",
            },
        ],
        accounts=[
            {
                "name": "synth",
                "plan": {
                    "windows": [{"name": "requests_5h", "limit": 60, "duration": "5h"}],
                    "concurrency": 3,
                },
                "policy": {"headroom": 0.1, "pr_share": 0.5, "reserve": 0.1},
            }
        ],
    )
    result = run_chaos(
        "worker-kill-soak",
        scenario,
        redis=chaos_redis,
        workdir=tmp_path,
        faults=[_kill_every(scenario, 2.0, 120)],
        groups=[Group(3), Group(3)],
    )
    _check("worker-kill-soak", result, 25)
