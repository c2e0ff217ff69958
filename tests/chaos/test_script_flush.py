"""Chaos 3: `SCRIPT FLUSH` in the middle of a busy run, three times.

Every Lua script reviewq runs (the limiter's seven, the waker's lock, the log sink's
store, RQ's own) is called by SHA and loaded again on NOSCRIPT, so a flushed script
cache (a restart, a failover, an operator) costs one reload per script and process,
never a failed call: every message is done, nothing fails, no job fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from harness import Chaos, Fault, base_scenario, check_invariants, run_chaos

from scheduler.sandbox.localredis import LocalRedis

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]


def _noscript_errors(chaos: Chaos) -> None:
    """How many NOSCRIPT replies Redis sent (each answered by a reload)."""
    stats = cast(dict[str, Any], chaos.sim.redis.info("errorstats"))
    chaos.notes["noscript_replies"] = int(stats.get("errorstat_NOSCRIPT", {}).get("count", 0))


def test_script_flush_mid_run_breaks_no_script(
    chaos_redis: LocalRedis, tmp_path: Path, chaos_run: int
) -> None:
    scenario = base_scenario()
    scale = scenario.time_scale

    def flush(chaos: Chaos) -> dict[str, Any]:
        before = chaos.provider_stats()["requests"]
        chaos.sim.redis.script_flush()
        return {"provider_requests_before": before}

    faults = [
        Fault("SCRIPT FLUSH", at_s=3 * scale, every_s=5 * scale, until_s=14 * scale, action=flush)
    ]
    result = run_chaos(
        "script-flush",
        scenario,
        redis=chaos_redis,
        workdir=tmp_path,
        faults=faults,
        on_end=_noscript_errors,
    )
    flushes = [e for e in result.events if e["event"] == "SCRIPT FLUSH"]
    last = flushes[-1]["outcome"]["provider_requests_before"]
    noscript = result.notes["noscript_replies"]
    figures = check_invariants(
        result, extra={"flushes": len(flushes), "noscript_replies": noscript}
    )
    assert noscript > 0  # scripts were really called by SHA after a flush, and reloaded
    assert len(flushes) == 3
    # Work went on after the last flush, and nothing failed because of any of them.
    assert figures["accounts"]["synth"]["requests"] > last
    assert result.rq_failed == []
    assert figures["accounts"]["synth"]["429_by_code"] == {}
