"""RQ queues, workers and job loads that carry only data and run only reviewq's jobs.

RQ's defaults turn write access to Redis into code execution in every worker: a
job's payload is a pickle (loading one can run anything), and the function a job
names is imported and called whatever it is, `os.system` included. Redis has a
password and per-service ACL users (compose.yaml), but a leaked credential or a
misconfigured server must not be enough to run code. So every Queue, worker and
Job.fetch in reviewq goes through this module: payloads, results and meta are JSON,
which loads as plain data; and a worker calls only the job functions reviewq itself
enqueues, with no callbacks and no webhooks, which reviewq never uses and which
would otherwise name more code to import or more places to send results to.

A job queued as a pickle (by plain RQ, or by a reviewq older than this module) is
never unpickled: it fails with a DeserializationError and lands in the failed
registry. The lost-job sweep dispatches a review message whose job failed so again,
as JSON; a pickled plan or finalize job is not run again, so drain the queue before
upgrading from a pickling version.

Every job reviewq enqueues is queued here too (`JobQueue`), under an id made here: the
job ids are in live Redis, and the same id for the same run is what makes a
redelivered event or a rerun transaction queue one job, not two.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis as redis_lib
from redis.client import Pipeline
from rq import Queue, SimpleWorker
from rq.defaults import DEFAULT_MAINTENANCE_TASK_INTERVAL
from rq.exceptions import DeserializationError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.utils import import_attribute

from scheduler.state.records import Retention
from scheduler.state.refs import PullRequestRef

__all__ = [
    "FINALIZE_JOB",
    "JOB_FUNCTIONS",
    "PLAN_JOB",
    "PUBSUB_POLL_S",
    "REVIEW_JOB",
    "SERIALIZER",
    "JobQueue",
    "ReviewJob",
    "ReviewWorker",
    "UntrustedJobError",
    "fetch_job",
    "finalize_job_id",
    "job_id_for",
    "plan_job_id",
    "review_queue",
    "review_worker",
]

log = logging.getLogger(__name__)

# Every function reviewq enqueues (`JobQueue` below); a worker runs nothing else.
# The RQ job paths are an API: jobs queued in a live Redis name these functions, so
# they stay stable across releases (docs/architecture.md, rule 7).
PLAN_JOB = "workers.jobs.plan_pr"
REVIEW_JOB = "workers.jobs.review_message"
FINALIZE_JOB = "workers.jobs.finalize_pr"
JOB_FUNCTIONS = frozenset({PLAN_JOB, REVIEW_JOB, FINALIZE_JOB})

# RQ's own JSON serializer: json.loads builds only dicts, lists, strings and numbers.
SERIALIZER = JSONSerializer


class UntrustedJobError(RuntimeError):
    """A job names a function (or a callback) that reviewq never enqueues."""


class ReviewJob(Job):
    """An RQ job that is always JSON and can only call reviewq's job functions.

    The serializer is fixed here, not left to the caller: a worker or a Queue built
    without it would otherwise fall back to pickle for this very job.
    """

    def __init__(
        self,
        id: str | None = None,
        connection: redis_lib.Redis | None = None,
        serializer: object = None,
    ) -> None:
        super().__init__(id, connection=connection, serializer=SERIALIZER)

    def _deserialize_data(self) -> None:
        """JSON has no tuple: give args back as the tuple a pickle gave, so code that
        reads `job.args` sees the same value either way; and refuse a payload of any
        other shape than the list RQ writes."""
        super()._deserialize_data()  # type: ignore[no-untyped-call]
        if not isinstance(self._args, list | tuple) or not isinstance(self._kwargs, dict):
            raise DeserializationError(f"job {self.id}: malformed payload")
        self._args = tuple(self._args)

    @property
    def func(self) -> Callable[..., Any]:
        """Checked before anything is imported: RQ resolves this only to call it."""
        name = self.func_name
        callbacks = (
            self._success_callback_name,
            self._failure_callback_name,
            self._stopped_callback_name,
        )
        if name not in JOB_FUNCTIONS or self.instance is not None or any(callbacks):
            log.error("refusing RQ job %s: it names %r, not a reviewq job", self.id, name)
            raise UntrustedJobError(
                f"job {self.id} names {name!r} (callbacks {[c for c in callbacks if c]}); "
                f"a reviewq worker runs only {sorted(JOB_FUNCTIONS)}"
            )
        return import_attribute(name)

    # reviewq sets no callbacks; one found in Redis was written by someone else, and
    # RQ would import and call it even for the refused job, so none is ever resolved.
    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None

    def send_webhooks(self, status: str | JobStatus, *, exc_string: str | None = None) -> None:
        """reviewq sets no webhooks: one found in Redis would send job data to a URL
        someone else chose, so none is sent."""


def review_queue(name: str, connection: redis_lib.Redis) -> Queue:
    """The queue `name`, writing and reading ReviewJobs as JSON."""
    return Queue(name, connection=connection, job_class=ReviewJob, serializer=SERIALIZER)


def fetch_job(job_id: str, connection: redis_lib.Redis) -> Job:
    """`Job.fetch` for a reviewq job; raises rq's NoSuchJobError as it does."""
    return ReviewJob.fetch(job_id, connection=connection, serializer=SERIALIZER)


# How long the worker's command channel thread waits for a message at a time. RQ polls
# with 60 s, and redis-py 8.2's `PubSubWorkerThread.stop()` waits for the thread with no
# timeout: a worker then took up to a minute to exit after SIGTERM, or after `--burst`
# found the queue empty. A second costs one idle round trip a second.
PUBSUB_POLL_S = 1.0
# How long a stopping worker waits for that thread to leave its poll. RQ waits 1 s and
# then closes the pubsub itself, while the thread, still in its last poll on a busy
# machine, closes it too: two `reset`s race, and the worker dies in teardown with
# "'NoneType' object has no attribute 'deregister_connect_callback'".
PUBSUB_STOP_WAIT_S = 5 * PUBSUB_POLL_S


class ReviewWorker(SimpleWorker):
    """RQ's SimpleWorker, with a command channel that stops within a second."""

    def subscribe(self) -> None:
        """RQ's `subscribe`, polling every `PUBSUB_POLL_S` instead of every 60 s."""
        pubsub = self.connection.pubsub()  # type: ignore[no-untyped-call]
        pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub = pubsub
        self.pubsub_thread = pubsub.run_in_thread(
            sleep_time=PUBSUB_POLL_S, daemon=True, exception_handler=self._pubsub_exception_handler
        )

    def unsubscribe(self) -> None:
        """RQ's `unsubscribe`, leaving the pubsub's close to its thread, which closes it
        on the way out (redis-py's `PubSubWorkerThread.run`): closing it here as well
        races that close. A thread still polling after the wait is a daemon, and closes
        the pubsub when its poll ends."""
        thread = self.pubsub_thread
        if thread is None:
            return
        self.log.info("Worker %s: unsubscribing from %s", self.name, self.pubsub_channel_name)
        thread.stop()
        thread.join(timeout=PUBSUB_STOP_WAIT_S)


def review_worker(
    queues: Sequence[Queue],
    connection: redis_lib.Redis,
    *,
    maintenance_interval: int = DEFAULT_MAINTENANCE_TASK_INTERVAL,
) -> SimpleWorker:
    """An RQ SimpleWorker that loads ReviewJobs only (the job class is what refuses)."""
    return ReviewWorker(
        list(queues),
        connection=connection,
        maintenance_interval=maintenance_interval,
        job_class=ReviewJob,
        serializer=SERIALIZER,
    )


def job_id_for(prefix: str, member: str, dispatch: int, kind: str = "msg") -> str:
    """RQ job ids allow only `[A-Za-z0-9_-]`; PR ids have `/` and `#`.

    RQ keeps every job at `rq:job:<id>`, whatever its queue, so the id carries the
    deployment's prefix: two deployments (or two `simulate` runs) on one Redis would
    otherwise share ids for the same PR, and a new job would inherit the old one's
    result TTL and vanish from the queue before it ran."""
    digest = hashlib.sha1(f"{prefix}\n{member}".encode()).hexdigest()[:20]
    return f"rq-{kind}-{digest}-{dispatch}"


def plan_job_id(prefix: str, ref: PullRequestRef, attempt: int = 0) -> str:
    """One id per head (and rerun), so a redelivered event cannot queue a second plan;
    the prefix too, as RQ's job keys are shared by every deployment on the Redis (see
    `job_id_for`)."""
    digest = hashlib.sha1(f"{prefix}\n{ref.id}@{ref.head_sha}".encode()).hexdigest()[:24]
    return f"rq-plan-{digest}" + (f"-r{attempt}" if attempt else "")


def finalize_job_id(prefix: str, pr: str, gen: int, attempt: int = 0) -> str:
    """One id per generation (and rerun): a finished generation sends one review."""
    return job_id_for(prefix, pr, gen, "fin") + (f"-r{attempt}" if attempt else "")


@dataclass(frozen=True, slots=True)
class JobQueue:
    """One deployment's queue as reviewq queues jobs onto it: the prefix their ids and
    first argument carry, and the timeout and TTLs every job gets.

    Each job is queued on a caller's `pipeline`, inside the transaction that records
    why it runs: a crash never leaves a job without its record, or a record without
    its job."""

    queue: Queue
    prefix: str
    timeout_s: int
    retention: Retention

    def enqueue_review(
        self, member: str, dispatch: int, *, at_front: bool, pipeline: Pipeline
    ) -> Job:
        """Run `dispatch` of message `member`; at the front when it waited already."""
        job_id = job_id_for(self.prefix, member, dispatch)
        what = f"review {member} run {dispatch}"
        args = (self.prefix, member, dispatch)
        return self._enqueue(REVIEW_JOB, args, job_id, what, pipeline, at_front=at_front)

    def enqueue_plan(
        self,
        ref: PullRequestRef,
        source: dict[str, Any],
        attempt: int = 0,
        *,
        pipeline: Pipeline | None = None,
    ) -> Job:
        """Plan `ref` at its head; `attempt` > 0 is a rerun after the forge could not
        list the files for now (see `workers.jobs.plan_pr`).

        At most one copy of a head's plan job waits on the queue: RQ pushes a job id
        onto the queue's list again each time it is enqueued, so a PR closed and
        reopened at one head left the same plan job there once per reopen, and each
        copy listed the PR's files again. A copy still waiting is taken off first, in
        the same transaction."""
        job_id = plan_job_id(self.prefix, ref, attempt)
        what = f"plan {ref.id}@{ref.head_sha[:12]}"
        args = (self.prefix, ref.model_dump_json(), source)
        if pipeline is not None and not pipeline.explicit_transaction:
            pipeline.multi()  # as RQ's enqueue does next: commands after it are queued
        (pipeline if pipeline is not None else self.queue.connection).lrem(
            self.queue.key, 0, job_id
        )
        return self._enqueue(PLAN_JOB, args, job_id, what, pipeline, attempt=attempt)

    def enqueue_finalize(self, pr: str, gen: int, attempt: int = 0, *, pipeline: Pipeline) -> Job:
        """Send generation `gen`'s review of `pr`; `attempt` > 0 is a rerun after its
        sink could not deliver for now (see `workers.jobs.finalize_pr`)."""
        job_id = finalize_job_id(self.prefix, pr, gen, attempt)
        what = f"finalize {pr} gen {gen}"
        args = (self.prefix, pr, gen)
        return self._enqueue(FINALIZE_JOB, args, job_id, what, pipeline, attempt=attempt)

    def _enqueue(
        self,
        func: str,
        args: tuple[Any, ...],
        job_id: str,
        description: str,
        pipeline: Pipeline | None,
        *,
        attempt: int = 0,
        at_front: bool = False,
    ) -> Job:
        """A rerun (`attempt` > 0) takes its attempt as one more argument, and says so."""
        if attempt:
            args, description = (*args, attempt), f"{description}, retry {attempt}"
        return self.queue.enqueue_call(
            func,
            args=args,
            job_id=job_id,
            timeout=self.timeout_s,
            result_ttl=self.retention.result_s,
            failure_ttl=self.retention.failure_s,
            description=description,
            at_front=at_front,
            pipeline=pipeline,
        )
