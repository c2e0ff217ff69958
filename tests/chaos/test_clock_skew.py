"""Chaos 7: two `reviewq worker` hosts whose wall clocks are 10 minutes fast and 10
minutes slow (Debian's `faketime`, wall clock only), sharing one Redis.

Nothing changes: every time reviewq acts on (grants, windows, waits, claims, leases,
due times, reset instants) is Redis's `TIME`, not the host's. Both skewed groups do
work, and the run is as clean as an unskewed one: nothing lost, nothing refused.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from harness import Chaos, Group, base_scenario, check_invariants, faketime_binary, run_chaos
from rq import Worker

from scheduler.sandbox.localredis import LocalRedis
from scheduler.state.jobs import review_queue

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.timeout(240),
    pytest.mark.skipif(
        faketime_binary() is None, reason="needs faketime (apt-get install faketime)"
    ),
]

SKEWS = ("+10m", "-10m")


def _clocks(chaos: Chaos) -> None:
    """Each live worker's own idea of now (RQ records it as the worker's last
    heartbeat) against Redis's clock, per group."""
    redis_now = dt.datetime.fromtimestamp(chaos.sim.admission.now_ms() / 1000, dt.UTC)
    queue = review_queue(chaos.spec.queue_name, chaos.sim.redis)
    seen: dict[int, list[float]] = {}
    for worker in Worker.all(queue=queue):
        group = chaos.supervisors.group_of(int(worker.pid or 0))
        if group is not None and worker.last_heartbeat is not None:
            beat = worker.last_heartbeat.replace(tzinfo=dt.UTC)
            seen.setdefault(group, []).append((beat - redis_now).total_seconds())
    chaos.notes["skew_s"] = {SKEWS[g]: round(sorted(v, key=abs)[-1]) for g, v in seen.items()}


def test_workers_ten_minutes_fast_and_slow_change_nothing(
    chaos_redis: LocalRedis, tmp_path: Path, chaos_run: int
) -> None:
    scenario = base_scenario(workers=4)
    result = run_chaos(
        "clock-skew",
        scenario,
        redis=chaos_redis,
        workdir=tmp_path,
        faults=[],
        groups=[Group(2, faketime=SKEWS[0]), Group(2, faketime=SKEWS[1])],
        on_end=_clocks,
    )
    jobs: dict[Any, int] = {}
    for row in result.workers:
        jobs[row["group"]] = jobs.get(row["group"], 0) + row["ok"]
    figures = check_invariants(
        result, extra={"skew_s": result.notes["skew_s"], "jobs_by_group": jobs}
    )
    # The clocks really were skewed (a heartbeat is at most seconds old) ...
    skew = result.notes["skew_s"]
    assert 540 <= skew["+10m"] <= 660 and -660 <= skew["-10m"] <= -540, skew
    # ... both groups did the work, and it went as an unskewed run does.
    assert jobs.get(0, 0) > 0 and jobs.get(1, 0) > 0, jobs
    account = figures["accounts"]["synth"]
    assert account["429_by_code"] == {} and account["quota_refusals"] == {}
