"""Enqueue a PR: the one function the webhook, the CLI and `simulate` all call.

It never talks to GitHub or a provider (a webhook must answer within milliseconds):
it records the PR's arrival and queues a `plan_pr` job that lists the files later.
"""

from __future__ import annotations

import hashlib
from typing import Any

from redis.client import Pipeline

from scheduler.admission import Admission
from workers.changes import PullRequestRef

__all__ = ["PLAN_JOB", "enqueue_plan", "enqueue_pr"]

PLAN_JOB = "workers.jobs.plan_pr"


def enqueue_pr(admission: Admission, ref: PullRequestRef, source: dict[str, Any]) -> bool:
    """Queue planning of `ref` at its head SHA; False if that head is already queued
    or reviewed (a redelivered event, say). A new head supersedes the old one when
    its plan lands (`Admission.submit`)."""
    current = admission.read_meta(ref.id)
    if current is not None and current.head_sha == ref.head_sha and current.status != "cancelled":
        return False
    admission.register(ref.id, ref.model_dump(mode="json"), ref.head_sha)
    enqueue_plan(admission, ref, source)
    return True


def enqueue_plan(
    admission: Admission,
    ref: PullRequestRef,
    source: dict[str, Any],
    attempt: int = 0,
    *,
    pipeline: Pipeline | None = None,
) -> None:
    """Queue the plan job of `ref`; `attempt` > 0 is a rerun after GitHub could not
    list the files for now (see `workers.jobs.plan_pr`), queued by the waker."""
    digest = hashlib.sha1(f"{ref.id}@{ref.head_sha}".encode()).hexdigest()[:24]
    args: tuple[Any, ...] = (admission.keys.prefix, ref.model_dump_json(), source)
    job_id, what = f"rq-plan-{digest}", f"plan {ref.id}@{ref.head_sha[:12]}"
    if attempt:
        args, job_id, what = (*args, attempt), f"{job_id}-r{attempt}", f"{what}, retry {attempt}"
    admission.queue.enqueue_call(
        PLAN_JOB,
        args=args,
        job_id=job_id,
        timeout=admission.job_timeout_s,
        result_ttl=admission.retention.result_s,
        failure_ttl=admission.retention.failure_s,
        description=what,
        pipeline=pipeline,
    )
