"""Enqueue a PR: the one function the webhook, the CLI and `simulate` all call.

It never talks to GitHub or a provider (a webhook must answer within milliseconds):
it records the PR's arrival and queues a `plan_pr` job that lists the files later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.client import Pipeline

from scheduler.admission import Admission
from scheduler.state.jobs import PLAN_JOB, plan_job_id
from scheduler.state.records import PrMeta
from scheduler.state.refs import PullRequestRef
from scheduler.state.txn import PrTxn, run_txn

__all__ = [
    "PLAN_JOB",
    "ForgeConflict",
    "Write",
    "enqueue_plan",
    "enqueue_pr",
    "head_moved",
    "plan_job_id",
]

Write = Callable[[Pipeline], object]


class ForgeConflict(ValueError):
    """The id is held by a PR of another forge (a local diff enqueued under a GitHub
    PR's id, say): queueing this one would take over the other's state."""


def enqueue_pr(
    admission: Admission,
    ref: PullRequestRef,
    source: dict[str, Any],
    *,
    also: Write | None = None,
    now_ms: int | None = None,
    again: bool = False,
    if_moved: bool = False,
) -> bool:
    """Queue planning of `ref` at its head SHA; False if that head is already queued,
    or was reviewed already (a redelivered or replayed event, a reopen), unless
    `again`: a person asked for the review of a finished head once more. A new head
    supersedes the old one when its plan lands (`Admission.submit`). Raises
    `ForgeConflict` when another forge's PR holds the id.

    One transaction over the PR (`scheduler.state.txn`): the check, the registration
    (`Admission.register_in`), the index entry and the plan job all commit in
    one MULTI/EXEC, or none does. So a failure never leaves the PR registered at a
    head with no plan job (which a redelivery would then take for "already queued"),
    and two deliveries of one head racing each other queue one job. `also` is one
    more write for that same MULTI, applied only when the plan is queued: the webhook
    marks its delivery id done there. `now_ms` is Redis's clock if the caller has
    just read it (the webhook, with its delivery claim). Round trips: TIME unless
    given, WATCH, two reads, EXEC.

    `if_moved`: the event said nothing about the code (a label or title edit), so the
    head is queued only when it moved past a head whose review ended (a push whose
    delivery was lost); never for a PR reviewq does not hold, nor while another head is
    still under review (an edit's old head must not supersede a newer push).
    """
    now = admission.now_ms() if now_ms is None else now_ms

    def body(txn: PrTxn) -> bool:
        current = txn.meta
        if current is not None and current.ref.get("forge", ref.forge) != ref.forge:
            held = current.ref.get("forge")
            raise ForgeConflict(f"{ref.id!r} is held by a {held} PR, not a {ref.forge} one")
        if if_moved and not head_moved(current, ref.head_sha):
            return False
        if current and not _wanted(current, ref.head_sha, again):
            return False
        meta = admission.register_in(txn, ref.model_dump(mode="json"), ref.head_sha, now)
        if source.get("now"):  # a person asked for it now: no wait for off-peak prices
            meta.now = True
        txn.later(lambda p: enqueue_plan(admission, ref, source, pipeline=p))
        if also is not None:
            txn.later(also)
        return True

    return run_txn(admission.redis, admission.keys, ref.id, body)


def head_moved(current: PrMeta | None, head_sha: str) -> bool:
    """Whether `head_sha` is news for an event that said nothing about the code: the PR
    is held at another head whose review ended (see `enqueue_pr`'s `if_moved`)."""
    return (
        current is not None
        and current.head_sha != head_sha
        and current.status in {"done", "cancelled"}
    )


def _wanted(current: PrMeta, head_sha: str, again: bool) -> bool:
    """Whether this head needs a plan: not while it is being reviewed, and once it was
    reviewed only when a person asks again."""
    if current.head_sha == head_sha and current.status not in {"done", "cancelled"}:
        return False
    if head_sha in current.reviewed or (current.head_sha == head_sha and current.status == "done"):
        return again
    return True


def enqueue_plan(
    admission: Admission,
    ref: PullRequestRef,
    source: dict[str, Any],
    attempt: int = 0,
    *,
    pipeline: Pipeline | None = None,
) -> None:
    """Queue the plan job of `ref` (`attempt` > 0: a rerun, see `JobQueue.enqueue_plan`).
    `enqueue_pr` looks it up at call time, so a test can make it fail mid-transaction."""
    admission.jobs.enqueue_plan(ref, source, attempt, pipeline=pipeline)
