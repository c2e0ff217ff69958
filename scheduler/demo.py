"""`reviewq demo`: watch the limiter share one Synthetic window between PRs.

A time-compressed run on a private Redis (or REDIS_URL): a 600-message PR arrives
first, small PRs keep arriving behind it, and worker threads take budget from the
real Lua limiter before each (simulated) provider call. With the fair policy the big
PR fills the idle window but never the reserve, so the small PRs start at once.
Until the review pipeline lands, this is the limiter on its own.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import redis as redis_lib

from scheduler.limiter import Grant, Limiter
from scheduler.plans import Plan, Policy, get_preset

__all__ = ["DemoPR", "DemoRun", "compress", "run_demo"]


def compress(plan: Plan, time_scale: float) -> Plan:
    """The same plan with every duration divided by `time_scale`."""
    windows = tuple(
        w.model_copy(
            update={
                "duration_ms": max(1, round(w.duration_ms / time_scale)),
                "tick_ms": None if w.tick_ms is None else max(1, round(w.tick_ms / time_scale)),
            }
        )
        for w in plan.windows
    )
    return plan.model_copy(update={"windows": windows})


@dataclass
class DemoPR:
    pr_id: str
    messages: int
    arrives_s: float
    done: int = 0
    in_flight: int = 0
    first_start_s: float | None = None
    finished_s: float | None = None


@dataclass
class DemoRun:
    """Shared state of one demo run; worker threads update it under `lock`."""

    limiter: Limiter
    prs: list[DemoPR]
    latency_s: float
    lease_ms: int
    time_scale: float
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    denials: Counter[str] = field(default_factory=Counter)
    grants: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def next_pr(self, rr: int) -> DemoPR | None:
        """Round-robin over arrived PRs with work left, so PRs interleave."""
        now = self.elapsed()
        ready = [p for p in self.prs if p.arrives_s <= now and p.done + p.in_flight < p.messages]
        return ready[rr % len(ready)] if ready else None


def _call_provider(run: DemoRun, pr: DemoPR, grant: Grant) -> None:
    time.sleep(run.latency_s * random.uniform(0.5, 1.5))
    run.limiter.release(grant.lease_id)
    with run.lock:
        pr.in_flight -= 1
        pr.done += 1
        if pr.done == pr.messages:
            pr.finished_s = run.elapsed()


def _worker(run: DemoRun, seed: int) -> None:
    rr = seed
    while not run.stop.is_set():
        rr += 1
        with run.lock:
            pr = run.next_pr(rr)
            if pr is not None:
                pr.in_flight += 1
        if pr is None:
            run.stop.wait(0.02)
            continue
        result = run.limiter.acquire(1000, pr.pr_id, uuid.uuid4().hex, run.lease_ms, model="demo")
        if isinstance(result, Grant):
            with run.lock:
                run.grants += 1
                if pr.first_start_s is None:
                    pr.first_start_s = run.elapsed()
            _call_provider(run, pr, result)
            continue
        with run.lock:
            pr.in_flight -= 1
            run.denials[result.reason] += 1
        run.stop.wait(min((result.retry_after_ms or 1000) / 1000, 0.05))


def build_prs(seconds: float) -> list[DemoPR]:
    """One 600-message PR first, then small PRs arriving through the run."""
    prs = [DemoPR("acme/monolith#1", 600, 0.0)]
    every = seconds / 14
    prs += [DemoPR(f"acme/web#{i + 2}", 5, 1.0 + i * every) for i in range(12)]
    return prs


def run_demo(
    client: redis_lib.Redis,
    *,
    seconds: float = 45.0,
    time_scale: float = 600.0,
    workers: int = 4,
    policy: Policy | None = None,
    on_tick: Callable[[DemoRun], None] | None = None,
) -> DemoRun:
    """Run the demo for `seconds` and return its final state; `on_tick` redraws."""
    plan = compress(get_preset("synthetic"), time_scale)
    plan = plan.model_copy(update={"concurrency": workers, "concurrency_per_model": False})
    policy = policy or Policy(headroom=0.0, pr_share=0.2, reserve=0.3)
    limiter = Limiter(client, f"demo-{uuid.uuid4().hex[:8]}", plan, policy)
    run = DemoRun(
        limiter,
        build_prs(seconds),
        latency_s=20 / time_scale,
        lease_ms=10_000,
        time_scale=time_scale,
    )
    threads = [threading.Thread(target=_worker, args=(run, i), daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    try:
        while run.elapsed() < seconds:
            if on_tick is not None:
                on_tick(run)
            time.sleep(0.25)
    finally:
        run.stop.set()
        for t in threads:
            t.join(timeout=5)
    return run
