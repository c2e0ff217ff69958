"""`retry-failed`: put failed work back, RQ's failed jobs and reviewq's failed messages.

RQ jobs are only tokens (see `scheduler.state.records`): a failed job is worth requeuing
only while the state it points at still waits for it. So each failed job is read
first and requeued only when it is *live*:
- a plan job, while its PR is still `planning` at that head (a newer head or a
  cancel made it stale);
- a review job, while its message is still `queued` under that dispatch number (a
  job that died before it claimed its message, within a claim period: after that the
  waker runs the message again by itself, see `scheduler.waker.lostjobs`; one that claimed
  it was already run again by the waker or finished the message, and a rerun would
  be a no-op);
- a finalize job, while its PR is still `finishing` that generation;
- any other job on the queue: always (only when no PR filter is given).
Stale jobs stay in RQ's failed registry, where they expire after a week.

Failed messages are re-armed by `Admission.retry_failed`, which documents how they
are charged. Requeuing changes no budget: a requeued job charges only when it calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

from rq.exceptions import DeserializationError, InvalidJobOperation, NoSuchJobError
from rq.job import Job

from scheduler.admission import FINALIZE_JOB, REVIEW_JOB
from scheduler.intake import PLAN_JOB
from scheduler.ops.deployment import Deployment
from scheduler.state.jobs import fetch_job
from scheduler.state.keys import split_member
from scheduler.state.records import read_pr
from scheduler.state.refs import PullRequestRef

__all__ = [
    "FailedJob",
    "MessageRetry",
    "failed_jobs",
    "job_json",
    "requeue_jobs",
    "retry_messages",
]

JobKind = Literal["plan", "review", "finalize", "other"]
_KINDS: dict[str, JobKind] = {PLAN_JOB: "plan", REVIEW_JOB: "review", FINALIZE_JOB: "finalize"}


@dataclass(frozen=True, slots=True)
class FailedJob:
    """One job of RQ's failed registry; `live` says requeuing it would do work."""

    job_id: str
    kind: JobKind
    pr: str | None
    live: bool
    note: str
    error: str


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


_UNREADABLE = "not JSON: queued by a reviewq version that pickled jobs; never run"


def _classify(dep: Deployment, job: Job) -> tuple[JobKind, str | None, bool, str]:
    kind = _KINDS.get(job.func_name or "", "other")
    args: tuple[Any, ...] = tuple(job.args or ())
    if kind == "other" or len(args) < 3 or args[0] != dep.prefix:
        return "other", None, kind == "other", "not a reviewq job of this deployment"
    if kind == "plan":
        ref = PullRequestRef.model_validate_json(args[1])
        meta = dep.admission.read_meta(ref.id)
        live = meta is not None and meta.status == "planning" and meta.head_sha == ref.head_sha
        return kind, ref.id, live, "" if live else "the PR was planned, moved on or cancelled"
    if kind == "review":
        pr, mid = split_member(args[1])
        view = read_pr(dep.redis, dep.keys, pr)
        state = view.messages.get(mid) if view else None
        live = state is not None and state.status == "queued" and state.dispatch == args[2]
        return kind, pr, live, "" if live else "its message was run again or has ended"
    meta = dep.admission.read_meta(args[1])
    live = meta is not None and meta.status == "finishing" and meta.gen == args[2]
    return kind, args[1], live, "" if live else "the PR's review was sent or it moved on"


def failed_jobs(dep: Deployment, pr: str | None = None) -> list[FailedJob]:
    """The queue's failed jobs (of `pr` only, if given), oldest failure first. Reads
    the registry's sorted set directly: RQ's own listing cleans it up first."""
    key = dep.queue.failed_job_registry.key
    ids = [i.decode() for i in cast(list[bytes], dep.redis.zrange(key, 0, -1))]
    out = []
    for job_id in ids:
        try:
            job = fetch_job(job_id, dep.redis)
            kind, owner, live, note = _classify(dep, job)
        except NoSuchJobError:
            continue  # its hash expired; RQ drops the id at its next cleanup
        except DeserializationError:  # pickled by a version before jobs were JSON
            out.append(FailedJob(job_id, "other", None, False, _UNREADABLE, ""))
            continue
        if pr is not None and owner != pr:
            continue
        result = job.latest_result()
        error = _last_line(result.exc_string if result is not None else None)
        out.append(FailedJob(job_id, kind, owner, live, note, error))
    return out


def requeue_jobs(dep: Deployment, jobs: list[FailedJob]) -> list[str]:
    """Requeue the live ones (RQ's FailedJobRegistry.requeue); returns their ids."""
    registry, done = dep.queue.failed_job_registry, []
    for job in jobs:
        if not job.live:
            continue
        try:
            registry.requeue(job.job_id)
        except (InvalidJobOperation, NoSuchJobError):
            continue  # another operator (or RQ's cleanup) got there first
        done.append(job.job_id)
    return done


@dataclass(frozen=True, slots=True)
class MessageRetry:
    """What `retry_messages` did for one PR with failed messages."""

    pr: str
    status: str
    failed: int
    rearmed: int
    note: str


def retry_messages(dep: Deployment, pr: str | None = None) -> list[MessageRetry]:
    """Re-arm failed messages of `pr`, or of every PR the deployment knows."""
    if pr is not None:
        prs = [pr]
    else:
        prs = [m.decode() for m in cast(list[bytes], dep.redis.zrange(dep.keys.prs, 0, -1))]
    out = []
    for name in prs:
        view = read_pr(dep.redis, dep.keys, name)
        if view is None:
            continue
        failed = sum(1 for s in view.current().values() if s.status == "failed")
        if not failed:
            continue
        rearmed = dep.admission.retry_failed(name) if view.meta.status == "active" else 0
        note = "" if rearmed else _why_not(view.meta.status)
        out.append(MessageRetry(name, view.meta.status, failed, rearmed, note))
    return out


def _why_not(status: str) -> str:
    if status in {"finishing", "done"}:
        return (
            "its review of this head was already gathered: the sink keeps one review per "
            "head, so push a new commit to review again"
        )
    return f"the PR is {status}"


def job_json(job: FailedJob) -> dict[str, Any]:
    return {
        "job_id": job.job_id,
        "kind": job.kind,
        "pr": job.pr,
        "live": job.live,
        "note": job.note,
        "error": job.error,
    }
