"""Enqueue a PR: the one function the webhook, the CLI and `simulate` all call.

It never talks to GitHub or a provider (a webhook must answer within milliseconds):
it records the PR's arrival and queues a `plan_pr` job that lists the files later.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from redis.client import Pipeline

from scheduler.admission import Admission
from scheduler.prstate import PrMeta
from scheduler.prtxn import PrTxn, run_txn
from workers.changes import PullRequestRef

__all__ = ["PLAN_JOB", "Write", "enqueue_plan", "enqueue_pr"]

Write = Callable[[Pipeline], object]

PLAN_JOB = "workers.jobs.plan_pr"


def enqueue_pr(
    admission: Admission,
    ref: PullRequestRef,
    source: dict[str, Any],
    *,
    also: Write | None = None,
    now_ms: int | None = None,
) -> bool:
    """Queue planning of `ref` at its head SHA; False if that head is already queued
    or reviewed (a redelivered event, say). A new head supersedes the old one when
    its plan lands (`Admission.submit`).

    One transaction over the PR (`scheduler.prtxn`): the check, the registration
    (`Admission.register`'s writes), the index entry and the plan job all commit in
    one MULTI/EXEC, or none does. So a failure never leaves the PR registered at a
    head with no plan job (which a redelivery would then take for "already queued"),
    and two deliveries of one head racing each other queue one job. `also` is one
    more write for that same MULTI, applied only when the plan is queued: the webhook
    marks its delivery id done there. `now_ms` is Redis's clock if the caller has
    just read it (the webhook, with its delivery claim). Round trips: TIME unless
    given, WATCH, two reads, EXEC.
    """
    now = admission.now_ms() if now_ms is None else now_ms

    def body(txn: PrTxn) -> bool:
        current = txn.meta
        if current and current.head_sha == ref.head_sha and current.status != "cancelled":
            return False
        meta = _register(txn, ref, now)
        _index(admission, txn, meta.arrived_ms, now)
        txn.later(lambda p: enqueue_plan(admission, ref, source, pipeline=p))
        if also is not None:
            txn.later(also)
        return True

    return run_txn(admission.redis, admission.keys, ref.id, body)


def _register(txn: PrTxn, ref: PullRequestRef, now: int) -> PrMeta:
    """`Admission.register`'s decision, inside the caller's transaction: arrival is
    when the user started waiting, reset when a finished or cancelled PR comes back.
    Kept equal to it by tests/test_webhook_intake.py."""
    meta = txn.meta or PrMeta(pr=ref.id, arrived_ms=now)
    if txn.meta is None or meta.status in {"done", "cancelled"}:
        meta.arrived_ms, meta.first_started_ms, meta.finished_ms = now, None, None
    meta.ref, meta.head_sha, meta.status = ref.model_dump(mode="json"), ref.head_sha, "planning"
    txn.meta = meta
    txn.meta_dirty |= set(PrMeta.model_fields) - {"pr"}
    return meta


def _index(admission: Admission, txn: PrTxn, arrived_ms: int, now: int) -> None:
    """The PR in the deployment's index, which forgets PRs whose state has expired,
    so it never outgrows retention (as `Admission.register` keeps it)."""
    prs, pr, keep_s = admission.keys.prs, txn.pr, admission.retention.pr_s
    txn.later(lambda p: p.zadd(prs, {pr: arrived_ms}))
    txn.later(lambda p: p.zremrangebyscore(prs, "-inf", f"({now - keep_s * 1000}"))
    txn.later(lambda p: p.expire(prs, keep_s))


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
