"""Enqueue a PR: the one function the webhook, the CLI and `simulate` all call.

It never talks to GitHub or a provider (a webhook must answer within milliseconds):
it records the PR's arrival and queues a `plan_pr` job that lists the files later.
"""

from __future__ import annotations

import hashlib
from typing import Any

from scheduler.admission import Admission
from workers.changes import PullRequestRef

__all__ = ["PLAN_JOB", "enqueue_pr"]

PLAN_JOB = "workers.jobs.plan_pr"


def enqueue_pr(admission: Admission, ref: PullRequestRef, source: dict[str, Any]) -> bool:
    """Queue planning of `ref` at its head SHA; False if that head is already queued
    or reviewed (a redelivered event, say). A new head supersedes the old one when
    its plan lands (`Admission.submit`)."""
    current = admission.read_meta(ref.id)
    if current is not None and current.head_sha == ref.head_sha and current.status != "cancelled":
        return False
    admission.register(ref.id, ref.model_dump(mode="json"), ref.head_sha)
    digest = hashlib.sha1(f"{ref.id}@{ref.head_sha}".encode()).hexdigest()[:24]
    admission.queue.enqueue_call(
        PLAN_JOB,
        args=(admission.keys.prefix, ref.model_dump_json(), source),
        job_id=f"rq-plan-{digest}",
        timeout=admission.job_timeout_s,
        result_ttl=admission.retention.result_s,
        failure_ttl=admission.retention.failure_s,
        description=f"plan {ref.id}@{ref.head_sha[:12]}",
    )
    return True
