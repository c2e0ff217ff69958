"""Plan and finalize jobs that could not reach the forge for now, run again later.

A plan job that could not list a PR's files, or a finalize job whose sink could not
deliver (a GitHub rate limit or 5xx), asks for a rerun at a due time: `schedule_plan`
and `schedule_finalize` record it (`P:plan-due`, `P:finalize-due`), and the waker
queues the reruns that are due (`queue_due_reruns`). Queueing a rerun and unlisting it
are one transaction, so a crash between them cannot lose it.
"""

from __future__ import annotations

import json
from typing import Any, cast

from scheduler.admission import Admission
from scheduler.state.refs import PullRequestRef

__all__ = ["queue_due_reruns", "schedule_finalize", "schedule_plan"]


def schedule_plan(
    admission: Admission, ref_json: str, source: dict[str, Any], attempt: int, due_ms: int
) -> None:
    """Have the waker queue run `attempt` of a PR's plan job at `due_ms`."""
    _schedule(admission, admission.keys.plan_due, [ref_json, source, attempt], due_ms)


def schedule_finalize(admission: Admission, pr: str, gen: int, attempt: int, due_ms: int) -> None:
    """Have the waker queue run `attempt` of `pr`'s finalize job for `gen` at `due_ms`."""
    _schedule(admission, admission.keys.finalize_due, [pr, gen, attempt], due_ms)


def _schedule(admission: Admission, key: str, rerun: list[Any], due_ms: int) -> None:
    with admission.redis.pipeline(transaction=True) as pipe:
        pipe.zadd(key, {json.dumps(rerun): due_ms})
        pipe.rpush(admission.keys.wake, "")  # it may be asleep until later
        pipe.execute()


def queue_due_reruns(admission: Admission, now: int, batch: int) -> int:
    """Queue the finalize and plan reruns due by `now` (at most `batch` of each)."""
    keys, jobs = admission.keys, admission.jobs
    moved = 0
    for raw in _due(admission, keys.finalize_due, now, batch):
        pr, gen, attempt = json.loads(raw)
        with admission.redis.pipeline(transaction=True) as pipe:
            jobs.enqueue_finalize(pr, gen, attempt, pipeline=pipe)
            pipe.zrem(keys.finalize_due, raw)
            pipe.execute()
        moved += 1
    for raw in _due(admission, keys.plan_due, now, batch):
        ref_json, source, attempt = json.loads(raw)
        ref = PullRequestRef.model_validate_json(ref_json)
        with admission.redis.pipeline(transaction=True) as pipe:
            jobs.enqueue_plan(ref, source, attempt, pipeline=pipe)
            pipe.zrem(keys.plan_due, raw)
            pipe.execute()
        moved += 1
    return moved


def _due(admission: Admission, key: str, now: int, batch: int) -> list[bytes]:
    return cast(list[bytes], admission.redis.zrangebyscore(key, "-inf", now, start=0, num=batch))
