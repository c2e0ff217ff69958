"""`reviewq simulate`: a time-compressed run of the real pipeline against simulators.

Real parts throughout: a real Redis, `reviewq`'s own RQ worker processes, the Lua
limiter, admission and the waker, and the provider simulator as upstream (it keeps
its own quota and is the referee of the figures). Only time is compressed: at
`time_scale` 300 the limiter's windows are 300 times shorter in real time, and the
simulator runs its clock 300 times faster, so both see the same simulated hours.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import multiprocessing as mp
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import httpx
import redis as redis_lib

from scheduler.admission import Admission, Fairness
from scheduler.config import ReviewSettings, Settings
from scheduler.config.planning import PlanningConfig
from scheduler.intake import enqueue_pr
from scheduler.quota.plans import Account
from scheduler.quota.timeofday import Calendar, RedisCalendar
from scheduler.sandbox import (
    DEV_KEY,
    ServerHandle,
    create_provider_app,
    serve_in_thread,
)
from scheduler.sandbox.localredis import LocalRedis, redis_url_or_local
from scheduler.sim.accounts import KEY_ENV, client_timeout_s, provider_config, scenario_model
from scheduler.sim.accounts import accounts as sim_accounts
from scheduler.sim.diffs import synthetic_diff
from scheduler.sim.pushes import deliver_push, push_costs, push_events
from scheduler.sim.report import report
from scheduler.sim.reserves import sim_controller
from scheduler.sim.run import SimRun
from scheduler.sim.scenario import PrSpec, Scenario
from scheduler.state.jobs import review_queue
from scheduler.state.keys import Keys
from scheduler.state.records import Retention
from scheduler.state.refs import PullRequestRef
from scheduler.waker import Waker
from workers.providers.attempt import RetryPolicy
from workers.providers.quota import CREDIT_POLL_INTERVAL_MS
from workers.runtime import RuntimeSpec, run_worker

__all__ = [
    "DirectIntake",
    "Intake",
    "WorkerLauncher",
    "run_scenario",
    "synthetic_diff",
]


class Intake(Protocol):
    """How a scenario's PRs reach reviewq. `simulate` calls `enqueue_pr` directly;
    `reviewq demo` starts a webhook server and a fake GitHub, and sends signed events."""

    def prepare(self, stack: contextlib.ExitStack, spec: RuntimeSpec) -> RuntimeSpec:
        """Start what the intake needs (torn down by `stack`); return the spec to run."""
        ...

    def deliver(self, run: SimRun, pr: PrSpec) -> None: ...


# Starts a scenario's worker processes for `spec` and stops them on exit. The default
# spawns `count` RQ worker processes directly; the chaos suite runs `reviewq worker`
# supervisors instead, which it can SIGKILL children of, or run under `faketime`.
WorkerLauncher = Callable[[RuntimeSpec, int], contextlib.AbstractContextManager[Any]]


class DirectIntake:
    """The PR's synthetic diff, enqueued through the same function the webhook calls."""

    def prepare(self, stack: contextlib.ExitStack, spec: RuntimeSpec) -> RuntimeSpec:
        return spec

    def deliver(self, run: SimRun, pr: PrSpec) -> None:
        ref = PullRequestRef(
            id=pr.id, head_sha=uuid.uuid5(uuid.NAMESPACE_URL, pr.id).hex, forge="local"
        )
        text = synthetic_diff(pr, run.scenario.line_chars, run.scenario.diff_style)
        enqueue_pr(run.admission, ref, {"kind": "diff", "text": text})


def _spec(sc: Scenario, mode: str, url: str, accounts: list[Account], tag: str) -> RuntimeSpec:
    scale = sc.time_scale
    review = ReviewSettings(
        model=scenario_model(sc),
        max_tokens=sc.max_tokens,
        thinking=sc.thinking,
        thinking_budget=sc.thinking_budget,
    )
    settings = Settings(redis_url=url, queue_name=f"sim-{tag}", accounts=accounts, review=review)
    return RuntimeSpec(
        settings=settings,
        redis_url=url,
        # The prefix `reviewq worker` and `reviewq serve` derive from the queue name.
        prefix=f"reviewq:sim-{tag}",
        queue_name=f"sim-{tag}",
        limiter_prefix=f"reviewq-sim:{tag}",
        model=review.model_for(accounts),
        max_tokens=sc.max_tokens,
        thinking=review.thinking_for(accounts),
        quota_poll_ms=max(1, round(CREDIT_POLL_INTERVAL_MS / scale)),
        calendar_key=Keys(f"reviewq:sim-{tag}").calendar,
        fairness=Fairness(
            mode="fifo" if mode == "fifo" else "fair", per_pr_inflight=sc.per_pr_inflight
        ),
        # A scenario's PRs are reviewed in full: the bounds a deployment sets on one
        # PR's cost would hide the load the scenario describes.
        planning=PlanningConfig(
            max_message_tokens=sc.max_message_tokens,
            large_pr_files=None,
            max_messages=None,
            incremental=sc.incremental,
        ),
        max_wait_ms=max(1, round(15 * 60_000 / scale)),
        park_recheck_ms=max(50, round(5 * 60_000 / scale)),
        retry=RetryPolicy(
            base_ms=max(1, round(2_000 / scale)),
            cap_ms=max(2, round(120_000 / scale)),
            concurrency_hold_ms=max(1, round(60_000 / scale)),
        ),
        trace=True,
        provider_timeout_s=client_timeout_s(sc),
        retention=Retention().within(round(sc.retention)).scaled(scale),
        maintenance_interval_s=max(30, round(600 / scale)),
        env={KEY_ENV: DEV_KEY},
    )


@contextlib.contextmanager
def _workers(spec: RuntimeSpec, count: int) -> Iterator[list[Any]]:
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=run_worker, args=(spec,), daemon=True) for _ in range(count)]
    for proc in procs:
        proc.start()
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.pid is not None and proc.is_alive():
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def _wait_for_workers(client: redis_lib.Redis, queue_name: str, count: int) -> None:
    """Simulated time starts once every worker listens: at x300 a worker that takes
    two seconds to start would otherwise cost ten simulated minutes."""
    from rq import Worker

    queue = review_queue(queue_name, client)
    deadline = time.monotonic() + 60
    while len(Worker.all(queue=queue)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} workers did not start within 60 s")
        time.sleep(0.1)


@contextlib.contextmanager
def _redis(url: str | None) -> Iterator[str]:
    env = dict(os.environ)
    if url:
        env["REDIS_URL"] = url
    found, server = redis_url_or_local(env)
    try:
        yield found
    finally:
        if isinstance(server, LocalRedis):
            server.stop()


def run_scenario(
    sc: Scenario,
    *,
    policy: str | None = None,
    redis_url: str | None = None,
    on_tick: Any = None,
    intake: Intake | None = None,
    workers: WorkerLauncher | None = None,
    on_end: Callable[[SimRun], None] | None = None,
    offpeak: bool = True,
) -> dict[str, Any]:
    """Run `sc` to its end (or until every PR is done) and return the report.

    `on_tick(run, now_sim)` runs every 50 ms while PRs are driven (fault injection,
    live views); `on_end(run)` once they are, before the run's keys are removed.
    `offpeak=False` drops the accounts' off-peak policies (the baseline)."""
    mode = policy or sc.policy
    intake = intake or DirectIntake()
    tag = uuid.uuid4().hex[:10]
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(_redis(redis_url))
        apps, providers = _start_providers(stack, sc)
        urls = {n: h.url for n, h in providers.items()}
        accounts = sim_accounts(sc, mode, urls, offpeak=offpeak)
        spec = intake.prepare(stack, _spec(sc, mode, url, accounts, tag))
        client = redis_lib.Redis.from_url(url)
        stack.callback(client.close)
        admission = _admission(client, spec)
        # Stopped before the figures are read (below), so no call is in flight then:
        # the provider has billed, and reviewq settled, exactly the same calls.
        running = stack.enter_context(contextlib.ExitStack())
        running.enter_context((workers or _workers)(spec, sc.workers))
        _wait_for_workers(client, spec.queue_name, sc.workers)
        _start_waker(stack, admission, spec)
        t0 = admission.now_ms()
        _start_calendar(sc, client, spec.calendar_key or "", apps, t0)
        run = SimRun(sc, mode, client, admission, providers, t0, accounts, prs=sc.all_prs())
        run.limiter_prefix = spec.limiter_prefix
        _drive(run, sc, on_tick, intake)
        run.ended_ms = admission.now_ms()
        if on_end is not None:
            on_end(run)
        running.close()
        stats = {
            n: httpx.get(f"{h.url}/_sim/stats", timeout=10).json() for n, h in providers.items()
        }
        result = report(run, stats)
        result |= {"pushes": push_costs(run)} if any(pr.pushes for pr in run.prs) else {}
        _cleanup(client, spec)
        return result


def _admission(client: redis_lib.Redis, spec: RuntimeSpec) -> Admission:
    return Admission(
        client,
        review_queue(spec.queue_name, client),
        prefix=spec.prefix,
        fairness=spec.fairness,
        fallback_ms=spec.fallback_ms,
        retention=spec.retention,
    )


def _start_providers(
    stack: contextlib.ExitStack, sc: Scenario
) -> tuple[dict[str, Any], dict[str, ServerHandle]]:
    """One simulator per account, served until the run's stack closes: its app (whose
    clock the run sets) and its server."""
    apps = {a.name: create_provider_app(provider_config(a, sc)) for a in sc.accounts}
    return apps, {n: stack.enter_context(serve_in_thread(app)) for n, app in apps.items()}


def _start_waker(stack: contextlib.ExitStack, admission: Admission, spec: RuntimeSpec) -> None:
    """The waker runs in this process, in a thread, until the run's stack closes. It
    keeps every change of an adaptive reserve, for the report."""
    stop = threading.Event()
    reserve = sim_controller(admission, spec.settings.accounts, spec.limiter_prefix)
    waker = threading.Thread(
        target=Waker(admission, claim_ms=spec.claim_ms, reserve=reserve).run,
        args=(stop,),
        daemon=True,
    )
    waker.start()
    stack.callback(waker.join, 5)
    stack.callback(stop.set)


def _start_calendar(
    sc: Scenario, client: redis_lib.Redis, key: str, apps: dict[str, Any], t0_ms: int
) -> None:
    """Simulated time starts now, on the scenario's calendar (`start_at`, else the
    wall clock): the workers read it from Redis, each simulator is set to it."""
    start = sc.start_at or dt.datetime.now(dt.UTC)
    start_ms = round(start.timestamp() * 1000)
    ttl_s = round(sc.duration / sc.time_scale) + 3600
    RedisCalendar(client, key).publish(Calendar(t0_ms, start_ms, sc.time_scale), ttl_s)
    for app in apps.values():
        clock = app.state.sim.clock
        clock.set_calendar(start.timestamp(), clock.now())


def _drive(run: SimRun, sc: Scenario, on_tick: Any, intake: Intake) -> None:
    """Enqueue each PR at its simulated arrival; stop at the end of the scenario or
    once every PR is done and none is still to come."""
    scale, pending = sc.time_scale, list(run.prs)
    if (pushes := push_events(run.prs)) and not isinstance(intake, DirectIntake):
        raise ValueError("pushes are simulated with local diffs only (reviewq simulate)")
    start = time.monotonic()
    end = start + sc.duration / scale
    while time.monotonic() < end:
        now_sim = (time.monotonic() - start) * scale
        while pending and pending[0].at <= now_sim:
            intake.deliver(run, pending.pop(0))
        while pushes and pushes[0][0] <= now_sim:
            _, _, k, pr = pushes.pop(0)
            deliver_push(run, pr, k)
        if on_tick is not None:
            on_tick(run, now_sim)
        if not pending and not pushes and _all_done(run):
            return
        time.sleep(0.05)


def _all_done(run: SimRun) -> bool:
    for pr in run.prs:
        meta = run.admission.read_meta(pr.id)
        if meta is None or meta.status not in {"done", "cancelled"}:
            return False
    return True


def _cleanup(client: redis_lib.Redis, spec: RuntimeSpec) -> None:
    """A run on a user's Redis leaves nothing behind: our prefix, limiter and RQ keys."""
    patterns = [f"{spec.prefix}:*", f"{spec.limiter_prefix}:*", f"*{spec.queue_name}*"]
    for pattern in patterns:
        keys = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
