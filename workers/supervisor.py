"""The parent of a host's worker processes: their waker, their replacement, their end.

The parent runs the waker (one per deployment acts; the others stand by) and
supervises its children: a child that dies is replaced, SIGTERM or Ctrl-C is passed
on so each child finishes the job it is running (RQ's warm shutdown), then all exit.

A child that dies without a word (SIGKILL, the OOM killer) leaves its RQ job marked
started, where RQ would only notice it after the job timeout and then fail it. The
parent puts that job back on the queue at once (`requeue_orphans`): every job is
safe to run again (see `workers.jobs`), and one that died before it claimed its
message (or while planning or posting a PR) is otherwise never run again.

`reviewq worker` (`scheduler.cli.worker`) runs `run_workers`; so do the chaos tests,
as a process of their own they can start under faketime and kill children of.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import socket
import threading
from collections.abc import Collection
from types import FrameType
from typing import Any

import redis as redis_lib
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from scheduler.admission import Admission
from scheduler.config import connect_redis
from scheduler.state.jobs import fetch_job, review_queue
from scheduler.waker import Waker
from scheduler.waker.reserve import ReserveController
from workers.runtime import RuntimeSpec, run_worker

__all__ = ["requeue_orphans", "run_workers"]

log = logging.getLogger(__name__)


def _child(spec: RuntimeSpec, burst: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    run_worker(spec, burst=burst, logging_level="INFO")


def _admission(spec: RuntimeSpec) -> Admission:
    client = connect_redis(spec.redis_url)
    queue = review_queue(spec.queue_name, client)
    return Admission(
        client, queue, prefix=spec.prefix, fairness=spec.fairness, retention=spec.retention
    )


def requeue_orphans(client: redis_lib.Redis, queue: Queue, pids: Collection[int]) -> list[str]:
    """Put the jobs that this host's dead worker processes `pids` had taken back at the
    front of `queue`, and unregister those workers; returns the requeued job ids.

    A job a process had taken is one of its executions still queued or started (RQ
    marks it started only after registering the execution); a job that finished or
    failed before the process died is left alone, so this does nothing for a child
    that exited cleanly. A process can also die between taking a job off the queue
    and registering it, leaving it only in the queue's intermediate list: those are
    requeued too. A live worker may be at that step with one of them, and then runs
    it as well, which is safe: a job run twice acts once (see `workers.jobs`)."""
    host, requeued = socket.gethostname(), []
    for worker in Worker.all(queue=queue):
        if worker.pid not in pids or worker.hostname != host:
            continue
        for execution in worker.get_current_executions(refresh=True):
            job = _fetch(client, execution.job_id)
            if job is None:
                continue
            if job.get_status() in _TAKEN:
                requeued.append(_requeue(queue, job))
            with client.pipeline() as pipe:
                execution.delete(job, pipe)
                pipe.execute()
        worker.register_death()  # type: ignore[no-untyped-call]
    for job_id in queue.intermediate_queue.get_job_ids():
        job = _fetch(client, job_id)
        if job is None or job_id in requeued or job_id in queue.started_job_registry:
            continue
        if job.get_status() == JobStatus.QUEUED:
            requeued.append(_requeue(queue, job))
    return requeued


_TAKEN = frozenset({JobStatus.QUEUED, JobStatus.STARTED})


def _fetch(client: redis_lib.Redis, job_id: str) -> Job | None:
    try:
        return fetch_job(job_id, client)
    except NoSuchJobError:
        return None


def _requeue(queue: Queue, job: Job) -> str:
    queue.enqueue_job(job, at_front=True)  # first: a crash here loses no job
    queue.intermediate_queue.remove(job.id)
    return job.id


def _recover(spec: RuntimeSpec, pids: Collection[int]) -> bool:
    """`requeue_orphans` for dead children; False (try again later) if Redis is away,
    which must not stop supervision: the children may have died of that very outage."""
    client = connect_redis(spec.redis_url)
    try:
        for job_id in requeue_orphans(client, review_queue(spec.queue_name, client), pids):
            log.warning("requeued job %s of a worker that died while running it", job_id)
    except redis_lib.RedisError:
        log.warning("could not requeue the jobs of dead workers %s", pids, exc_info=True)
        return False
    finally:
        client.close()
    return True


def run_workers(spec: RuntimeSpec, processes: int, burst: bool) -> int:
    """Supervise `processes` children and a waker until stopped; returns an exit code."""
    ctx = mp.get_context("spawn")
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    admission = _admission(spec)
    reserve = ReserveController.for_accounts(
        admission, spec.settings.accounts, key_prefix=spec.limiter_prefix
    )
    waker = threading.Thread(
        target=Waker(admission, claim_ms=spec.claim_ms, reserve=reserve).run,
        args=(stop,),
        daemon=True,
    )
    waker.start()
    children: list[Any] = []
    orphaned: set[int] = set()  # dead children whose jobs are not requeued yet
    spawned = 0
    while not stop.is_set():
        for child in children:
            if child.is_alive():
                continue
            if child.exitcode != 0 and not burst:
                log.warning("worker %s exited with %s; starting another", child.pid, child.exitcode)
            orphaned.add(child.pid)
        if orphaned and _recover(spec, orphaned):
            orphaned.clear()
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
