"""`reviewq worker`: RQ worker processes with the limiter, admission and waker wired in.

The parent process runs the waker (one per deployment acts; the others stand by) and
supervises its children: a child that dies is replaced, SIGTERM or Ctrl-C is passed
on so each child finishes the job it is running (RQ's warm shutdown), then all exit.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

import click
import redis as redis_lib
from rq import Queue

from scheduler.admission import Admission
from scheduler.config import Settings
from scheduler.waker import Waker
from workers.runtime import RuntimeSpec, run_worker

__all__ = ["runtime_spec", "worker"]

log = logging.getLogger(__name__)


def runtime_spec(settings: Settings) -> RuntimeSpec:
    """What every worker process builds its clients from, from the loaded settings."""
    review = settings.review
    return RuntimeSpec(
        settings=settings,
        redis_url=settings.redis_url,
        prefix=f"reviewq:{settings.queue_name}",
        queue_name=settings.queue_name,
        model=review.model_for(settings.accounts),
        fairness=review.fairness,
        planning=settings.planning,
        sink=review.sink,
        github_url=review.github_url,
        github_token_env=review.github_token_env,
        max_tokens=review.max_tokens,
    )


def _child(spec: RuntimeSpec, burst: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    run_worker(spec, burst=burst, logging_level="INFO")


def _admission(spec: RuntimeSpec) -> Admission:
    client = redis_lib.Redis.from_url(spec.redis_url)
    queue = Queue(spec.queue_name, connection=client)
    return Admission(
        client, queue, prefix=spec.prefix, fairness=spec.fairness, retention=spec.retention
    )


def run_workers(spec: RuntimeSpec, processes: int, burst: bool) -> int:
    """Supervise `processes` children and a waker until stopped; returns an exit code."""
    ctx = mp.get_context("spawn")
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    waker = threading.Thread(target=Waker(_admission(spec)).run, args=(stop,), daemon=True)
    waker.start()
    children: list[Any] = []
    spawned = 0
    while not stop.is_set():
        for child in children:
            if not child.is_alive() and child.exitcode != 0 and not burst:
                log.warning("worker %s exited with %s; starting another", child.pid, child.exitcode)
        children = [c for c in children if c.is_alive()]
        if burst and spawned and not children:
            break
        while len(children) < processes and not (burst and spawned >= processes):
            child = ctx.Process(target=_child, args=(spec, burst), name="reviewq-worker")
            child.start()
            children.append(child)
            spawned += 1
        stop.wait(0.5)
    for child in children:
        if child.is_alive() and child.pid:
            os.kill(child.pid, signal.SIGTERM)
    for child in children:
        child.join(spec.job_timeout_s)
    stop.set()
    waker.join(5)
    return 0


@click.command("worker")
@click.option("--processes", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.pass_context
def worker(ctx: click.Context, processes: int, burst: bool) -> None:
    """Run review workers (and the waker) until SIGTERM or Ctrl-C."""
    settings: Settings = ctx.obj.settings
    if not settings.accounts:
        raise click.UsageError("no accounts configured: add [[accounts]] tables to the config")
    spec = runtime_spec(settings)
    redis_lib.Redis.from_url(spec.redis_url).ping()  # fail fast, with exit code 3
    click.echo(f"{processes} worker process(es) on queue {spec.queue_name!r}, model {spec.model}")
    started = time.monotonic()
    code = run_workers(spec, processes, burst)
    click.echo(f"workers stopped after {time.monotonic() - started:.0f} s")
    ctx.exit(code)
