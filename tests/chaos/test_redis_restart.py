"""Chaos 2: Redis (AOF, `appendfsync everysec`) crashes mid-run and comes back.

`everysec` writes every change to the kernel at once and fsyncs once a second, so a
crash of the redis-server process alone loses nothing; a host crash can take the last
second that was not fsynced yet. The test models that worst case (`AofRedis.crash`):
SIGKILL, the AOF cut back to its length one second earlier, restart on the same port
and directory. The last second of grants, claims and leases is then forgotten:

- the workers (RQ reconnects, `reviewq worker` replaces any child that gave up), the
  waker and the webhook server reconnect by themselves, and a PR delivered after the
  crash is reviewed like the others;
- the limiter's view is behind the provider's count right after the restart, and the
  provider-sync path (Synthetic's `x-synthetic-quotas` on every answer, 429s included)
  books the difference with the first answer, before anything is over-spent;
- messages whose claim or finish was forgotten run again (same request id) or finish
  anyway (see `Admission.finish`): none is lost, none is reviewed twice.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import pytest
from harness import Chaos, base_scenario, check_invariants, run_chaos

from scheduler.sandbox.localredis import LocalRedis

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

LOSS_S = 1.0  # what `appendfsync everysec` can lose in a host crash
SLOTS = 2  # the plan's concurrency


def _view(chaos: Chaos) -> dict[str, Any]:
    """The limiter's count and the provider's, and the limiter's recent charges by id
    (its charge log is scored by grant time, on Redis's clock)."""
    limiter, redis = chaos.limiter(), chaos.sim.redis
    stats = chaos.provider_stats()
    charges = cast(list[bytes], redis.hkeys(limiter.keys[0]))
    now_ms = chaos.sim.admission.now_ms()
    recent = cast(
        list[tuple[bytes, float]],
        redis.zrangebyscore(limiter.keys[1], now_ms - 3_000, "+inf", withscores=True),
    )
    return {
        "limiter": limiter.status().windows[0].used / 1000,
        "provider": stats["windows"][0]["used_now"] / 1000,
        "charges": {rid.decode(): now_ms - at for rid, at in recent},  # id -> age, ms
        "admitted": stats["admitted"],
        "sync_ids": sorted(k.decode() for k in charges if k.startswith(b"c:~sync:")),
        "t": time.monotonic(),
    }


def _granted_within(view: dict[str, Any], ms: float) -> set[str]:
    return {rid for rid, age in view["charges"].items() if age <= ms}


def _on_tick(chaos: Chaos, now_sim: float) -> None:
    """Crash once, 2.5 simulated hours in, when PRs have stopped arriving for a while
    (a delivery in the lost second would be forgotten too: see docs/guarantees.md) and at
    least two grants fall in the second the crash loses; then watch for the sync."""
    notes = chaos.notes
    if "crash" not in notes:
        quiet = time.monotonic() - max(chaos.intake.delivered_at, default=0) > LOSS_S + 0.5
        if now_sim < 2.5 * 3600 or not quiet:
            return
        before = _view(chaos)
        if len(_granted_within(before, LOSS_S * 1000)) < 2:
            return
        crash = chaos.aof.crash(LOSS_S) if chaos.aof else {}
        restarted = time.monotonic()
        after = _view(chaos)
        notes["crash"] = {"before": before, "after": after, "restarted": restarted, **crash}
        chaos.event("Redis crash", **crash, at_sim_h=round(now_sim / 3600, 2))
        # A call in flight across the crash may answer before that reading: its sync
        # (adopted only when the provider's count is higher) already caught up.
        if set(after["sync_ids"]) - set(before["sync_ids"]):
            _synced(notes, after, since=before, at_reading=True)
    elif "synced" not in notes:
        view, after = _view(chaos), notes["crash"]["after"]
        if view["limiter"] >= view["provider"] and len(view["sync_ids"]) > len(after["sync_ids"]):
            _synced(notes, view, since=after, at_reading=False)
        elif view["t"] - after["t"] > 10:
            notes["synced"] = {"never": view}


def _synced(
    notes: dict[str, Any], view: dict[str, Any], *, since: dict[str, Any], at_reading: bool
) -> None:
    """`admitted_meanwhile`: calls the provider admitted since the reading `since`; at the
    first reading after the restart, since the one before the crash (an upper bound)."""
    notes["synced"] = {
        **view,
        "at_reading": at_reading,
        "ms_after_restart": round((view["t"] - notes["crash"]["restarted"]) * 1000),
        "admitted_meanwhile": view["admitted"] - since["admitted"],
    }


def _waker_reruns(workdir: Path) -> dict[str, int]:
    """Runs the wakers started again, from the worker hosts' logs: lapsed claims, and
    queued runs whose RQ job the crash lost (`scheduler.waker.lostjobs`)."""
    text = "".join(p.read_text(errors="replace") for p in workdir.glob("workers-*.log"))
    return {
        "claims_lapsed": text.count("claim lapsed; running"),
        "lost_jobs_redispatched": text.count("was lost; running it again"),
    }


def test_redis_crash_loses_at_most_a_second_and_sync_repairs_the_budget(
    chaos_redis: LocalRedis, tmp_path: Path, chaos_run: int
) -> None:
    scenario = base_scenario(
        generators=[
            {
                "prefix": "acme/api",
                "count": 8,
                "files": 4,
                "lines_per_file": 60,
                "start": "10m",
                "every": "10m",
            },
            {
                "prefix": "acme/web",
                "count": 3,
                "files": 10,
                "lines_per_file": 300,
                "start": "20m",
                "every": "20m",
            },
        ],
        prs=[
            {"id": "acme/mono#100", "at": 0, "files": 60, "lines_per_file": 300},
            {"id": "acme/late#1", "at": "5h", "files": 4, "lines_per_file": 60},
        ],
    )
    result = run_chaos(
        "redis-restart",
        scenario,
        redis=chaos_redis,
        workdir=tmp_path,
        faults=[],
        aof=True,
        on_tick=_on_tick,
    )
    crash, synced = result.notes.get("crash"), result.notes.get("synced", {})
    assert crash is not None, "the run never reached a busy, quiet moment to crash in"
    before, after = crash["before"], crash["after"]
    # Grants the restarted Redis no longer has, and new ones workers made between the
    # restart and the reading (they were waiting for Redis to come back).
    last_second = _granted_within(before, LOSS_S * 1000)
    forgotten = _granted_within(before, 2_000) - set(after["charges"])
    regranted = set(after["charges"]) - set(before["charges"])
    behind = round(after["provider"] - (after["limiter"] - len(regranted)), 3)
    figures = check_invariants(
        result,
        extra={
            "crash": {
                "down_ms": crash["down_ms"],
                "lost_bytes": crash["lost_bytes"],
                "grants_forgotten": len(forgotten),
                "granted_in_lost_second": len(last_second),
                "limiter_behind_by": behind,
                "regranted_at_restart": len(regranted),
                "synced_after_ms": synced.get("ms_after_restart"),
                "admitted_before_sync": synced.get("admitted_meanwhile"),
                **_waker_reruns(tmp_path),
            }
        },
    )
    assert crash["lost_bytes"] > 0
    # At most about a second of grants is forgotten: those of the last second, and
    # one more sampling step (the AOF is cut at its length of a tick a second ago) ...
    assert forgotten and len(forgotten) <= len(last_second) + 1, (forgotten, last_second)
    # ... the limiter is behind the provider right after the restart (or a sync booked
    # the difference before the first reading: syncs are adopted only when behind), or
    # it was ahead before the crash by at least what it forgot: it counts a charge from
    # the grant to the window's end plus the arrival margin, the provider from arrival
    # to the window's end, so the grants of the last margin are counted by the limiter
    # alone. A provider reading puts it back in step before more than its slots (and
    # the ones whose leases it forgot) could start calls on the old view.
    ahead_before = round(before["limiter"] - before["provider"], 3)
    premise = behind > 0 or synced.get("at_reading") or ahead_before >= len(forgotten)
    assert premise, (behind, ahead_before, len(forgotten), synced)
    assert "never" not in synced and synced, synced
    assert synced["admitted_meanwhile"] <= 2 * SLOTS  # its own slots, and ones it forgot
    # The webhook server took the PR that arrived after the crash; it was reviewed.
    late = next(p for p in result.prs if p["id"] == "acme/late#1")
    assert late["status"] == "done"
    assert figures["accounts"]["synth"]["quota_refusals"].get("over_plan", 0) == 0
