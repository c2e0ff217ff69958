"""`reviewq soak SCENARIO`: a long `simulate` run that watches for slow leaks.

It samples, every simulated hour, what would grow if something were never expired or
never freed: Redis memory (less the grant trace, which only `simulate` writes), the
key count, and each worker process's resident memory. Every PR is checked once it
ends, before its state expires: all its messages in a terminal state. Quota figures
come from the provider simulator, the referee, as in `simulate`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from rq import Worker

from scheduler.sim.run import SimRun
from scheduler.sim.scenario import Scenario
from scheduler.sim.simulate import run_scenario
from scheduler.state.jobs import review_queue
from scheduler.state.records import TERMINAL, read_pr

__all__ = ["SoakSample", "run_soak"]

_DAY_S = 86_400.0


@dataclass
class SoakSample:
    sim_h: float
    redis_bytes: int
    trace_bytes: int
    keys: int
    worker_rss_kb: dict[int, int]

    @property
    def state_bytes(self) -> int:
        """Memory a deployment would use: the simulation's grant trace left out."""
        return self.redis_bytes - self.trace_bytes


@dataclass
class _Watch:
    every_s: float
    samples: list[SoakSample] = field(default_factory=list)
    ended: dict[str, dict[str, int]] = field(default_factory=dict)
    next_at: float = 0.0

    def tick(self, run: SimRun, now_sim: float) -> None:
        if now_sim < self.next_at:
            return
        self.next_at = now_sim + self.every_s
        self.samples.append(_sample(run, now_sim))
        self._check_ended(run, now_sim)

    def _check_ended(self, run: SimRun, now_sim: float) -> None:
        for spec in run.prs:
            if spec.at > now_sim or spec.id in self.ended:
                continue
            view = read_pr(run.redis, run.admission.keys, spec.id)
            if view is None or view.meta.status not in {"done", "cancelled"}:
                continue
            states = view.current()
            open_ = sum(s.status not in TERMINAL for s in states.values())
            self.ended[spec.id] = {"messages": len(states), "not_terminal": open_}


def _rss_kb(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def _sample(run: SimRun, now_sim: float) -> SoakSample:
    info = cast(dict[str, Any], run.redis.info("memory"))
    trace = cast(int | None, run.redis.memory_usage(run.admission.keys.trace)) or 0
    queue = review_queue(run.admission.queue.name, run.redis)
    rss = {}
    for worker in Worker.all(queue=queue):
        if worker.pid and (kb := _rss_kb(worker.pid)) is not None:
            rss[worker.pid] = kb
    return SoakSample(
        sim_h=round(now_sim / 3600, 2),
        redis_bytes=int(info["used_memory"]),
        trace_bytes=trace,
        keys=cast(int, run.redis.dbsize()),
        worker_rss_kb=rss,
    )


def run_soak(sc: Scenario, *, warmup_s: float = _DAY_S, every_s: float = 3600.0) -> dict[str, Any]:
    """Run `sc` and return the `simulate` report's checks plus the leak figures.

    Warm-up is the first simulated day (retention and the windows fill up in it);
    flatness compares the memory after it with the memory at the end."""
    watch = _Watch(every_s)
    result = run_scenario(sc, on_tick=watch.tick)
    return {**_checks(result), "soak": _figures(watch, sc, warmup_s)}


def _checks(result: dict[str, Any]) -> dict[str, Any]:
    accounts = [
        {
            "name": a["name"],
            "requests": a["requests"],
            "provider_429_by_code": a["provider_429_by_code"],
            "windows": a["windows"],
        }
        for a in result["accounts"]
    ]
    over = [
        f"{a['name']}.{w['name']}"
        for a in accounts
        for w in a["windows"]
        if w["max_used_in_any_window"] > w["limit"]
    ]
    return {"scenario": result["scenario"], "accounts": accounts, "windows_over_limit": over}


def _figures(watch: _Watch, sc: Scenario, warmup_s: float) -> dict[str, Any]:
    after = [s for s in watch.samples if s.sim_h * 3600 >= warmup_s]
    states = [s.state_bytes for s in after]
    keys = [s.keys for s in after]
    warm, end = (states[0], states[-1]) if states else (None, None)
    prs = sc.all_prs()
    return {
        "samples": len(watch.samples),
        "redis_state_bytes_warm": warm,
        "redis_state_bytes_end": end,
        "redis_state_change": _change(warm, end),
        "redis_state_max_over_min": round(max(states) / min(states), 3) if states else None,
        "keys_warm": keys[0] if keys else None,
        "keys_end": keys[-1] if keys else None,
        "worker_rss_kb": _rss_trend(watch.samples, warmup_s),
        "prs": len(prs),
        "prs_ended": len(watch.ended),
        "messages_checked": sum(e["messages"] for e in watch.ended.values()),
        "messages_not_terminal": sum(e["not_terminal"] for e in watch.ended.values()),
        "series": [
            {"sim_h": s.sim_h, "state_bytes": s.state_bytes, "keys": s.keys}
            for s in watch.samples[:: max(1, len(watch.samples) // 28)]
        ],
    }


def _change(start: int | None, end: int | None) -> float | None:
    return None if not start or end is None else round((end - start) / start, 4)


def _rss_trend(samples: list[SoakSample], warmup_s: float) -> dict[str, Any]:
    """Per worker process: resident memory after warm-up and at its last sample."""
    seen: dict[int, list[int]] = {}
    for s in samples:
        if s.sim_h * 3600 < warmup_s:
            continue
        for pid, kb in s.worker_rss_kb.items():
            seen.setdefault(pid, []).append(kb)
    return {
        str(pid): {
            "warm": kbs[0],
            "end": kbs[-1],
            "max": max(kbs),
            "change": _change(kbs[0], kbs[-1]),
        }
        for pid, kbs in seen.items()
    }
