"""Write access to Redis is not code execution in a worker (scheduler.state.jobs).

Each attack is queued the way someone holding only a Redis connection would queue
it, with plain RQ, and handed to a real reviewq worker (`review_worker`, the one
`reviewq worker` runs). Each would create a marker file if anything ran; a plain RQ
worker is shown to create it, so a missing file means the refusal, not a broken test.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import zlib
from pathlib import Path
from typing import Any, cast

import pytest
import redis as redis_py
from rq import Callback, Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from scheduler.admission import FINALIZE_JOB, REVIEW_JOB, Admission
from scheduler.intake import PLAN_JOB, enqueue_pr
from scheduler.state.jobs import (
    JOB_FUNCTIONS,
    ReviewJob,
    fetch_job,
    review_queue,
    review_worker,
)
from scheduler.state.refs import PullRequestRef
from scheduler.waker.lostjobs import LostJobSweep

ROOT = Path(__file__).resolve().parent.parent


class _RunsOnUnpickle:
    """A pickle whose loading runs a shell command: what `pickle.loads` of attacker
    data does, before RQ ever looks at the function name."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


_MARKERS: dict[str, Path] = {}


def _mark_callback(*args: Any) -> None:
    """A callback an attacker could name: any importable function would do."""
    _MARKERS["callback"].touch()


def _run(worker: SimpleWorker) -> None:
    worker.work(burst=True, logging_level="CRITICAL")


def _failed_with(job: Job, text: str) -> bool:
    result = job.latest_result()
    return result is not None and text in (result.exc_string or "")


def test_a_pickled_job_is_never_unpickled(
    redis: redis_py.Redis, unique: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    # Plain RQ, default (pickle) serializer, and even a function name reviewq allows.
    attack = Queue(f"q-{unique}", connection=redis).enqueue_call(
        PLAN_JOB, args=(_RunsOnUnpickle(f"touch {marker}"),), job_id=f"pickle-{unique}"
    )
    queue = review_queue(f"q-{unique}", redis)
    _run(review_worker([queue], redis))
    assert not marker.exists()
    job = Job.fetch(attack.id, connection=redis)  # plain Job: only its status is read
    assert job.get_status() == JobStatus.FAILED
    assert attack.id in queue.failed_job_registry.get_job_ids()

    # The guard: a stock RQ worker runs the command just by loading the same payload.
    plain = Queue(f"q2-{unique}", connection=redis)
    plain.enqueue_call(PLAN_JOB, args=(_RunsOnUnpickle(f"touch {marker}"),))
    _run(SimpleWorker([plain], connection=redis))
    assert marker.exists()


def test_a_json_job_naming_os_system_is_refused(
    redis: redis_py.Redis, unique: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    json_queue = Queue(f"q-{unique}", connection=redis, serializer=JSONSerializer)
    attack = json_queue.enqueue_call("os.system", args=(f"touch {marker}",))
    queue = review_queue(f"q-{unique}", redis)
    _run(review_worker([queue], redis))
    assert not marker.exists()
    job = fetch_job(attack.id, redis)
    assert job.get_status() == JobStatus.FAILED
    assert _failed_with(job, "UntrustedJobError")

    # The guard: a stock RQ worker with the same serializer runs it.
    plain = Queue(f"q2-{unique}", connection=redis, serializer=JSONSerializer)
    plain.enqueue_call("os.system", args=(f"touch {marker}",))
    _run(SimpleWorker([plain], connection=redis, serializer=JSONSerializer))
    assert marker.exists()


def test_a_callback_on_one_of_our_jobs_is_refused_and_never_called(
    redis: redis_py.Redis, unique: str, tmp_path: Path
) -> None:
    """RQ imports and calls a job's callbacks by name too, even for a job that fails."""
    _MARKERS["callback"] = tmp_path / "callback-ran"
    name = f"{__name__}._mark_callback"
    json_queue = Queue(f"q-{unique}", connection=redis, serializer=JSONSerializer)
    attack = json_queue.enqueue_call(
        PLAN_JOB, args=("x", "{}", {}), on_failure=Callback(name), on_success=Callback(name)
    )
    queue = review_queue(f"q-{unique}", redis)
    _run(review_worker([queue], redis))
    assert not _MARKERS["callback"].exists()
    job = fetch_job(attack.id, redis)
    assert job.get_status() == JobStatus.FAILED and _failed_with(job, "UntrustedJobError")

    # The guard: a stock worker calls the failure callback of the same failing job.
    plain = Queue(f"q2-{unique}", connection=redis, serializer=JSONSerializer)
    plain.enqueue_call(PLAN_JOB, args=("x", "{}", {}), on_failure=Callback(name))
    _run(SimpleWorker([plain], connection=redis, serializer=JSONSerializer))
    assert _MARKERS["callback"].exists()


def test_a_malformed_payload_is_refused(redis: redis_py.Redis, unique: str) -> None:
    queue = review_queue(f"q-{unique}", redis)
    job = queue.enqueue_call(REVIEW_JOB, args=("p", "o/r#1|1.0", 1))
    # Our function, but arguments that are not a list: refused before the call.
    redis.hset(job.key, "data", json.dumps([REVIEW_JOB, None, "p", {}]))
    _run(review_worker([queue], redis))
    failed = fetch_job(job.id, redis)
    assert failed.get_status() == JobStatus.FAILED
    assert _failed_with(failed, "malformed payload")


def test_our_jobs_are_json_and_keep_their_argument_types(
    redis: redis_py.Redis, unique: str
) -> None:
    adm = Admission(redis, review_queue(f"q-{unique}", redis), prefix=f"t:{unique}")
    ref = PullRequestRef(id=f"local-{unique}", head_sha="a" * 40, forge="local")
    assert enqueue_pr(adm, ref, {"kind": "diff", "text": "x"})
    (job_id,) = adm.queue.get_job_ids()
    raw = redis.hget(f"rq:job:{job_id}", "data")
    assert isinstance(raw, bytes)
    assert json.loads(zlib.decompress(raw))[0] == PLAN_JOB  # JSON, not a pickle
    job = fetch_job(job_id, redis)
    assert isinstance(job, ReviewJob) and job.func_name == PLAN_JOB
    assert job.args == (f"t:{unique}", ref.model_dump_json(), {"kind": "diff", "text": "x"})
    assert isinstance(job.args, tuple)


def test_the_allowed_functions_are_the_job_functions() -> None:
    import workers.jobs

    assert {PLAN_JOB, REVIEW_JOB, FINALIZE_JOB} == JOB_FUNCTIONS
    for name in JOB_FUNCTIONS:
        module, _, attr = name.rpartition(".")
        assert module == workers.jobs.__name__ and callable(getattr(workers.jobs, attr))


def _calls(path: Path) -> list[tuple[str, ast.Call]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Call):
            out.append((ast.unparse(node.func), node))
    return out


_RQ_BUILDERS = {"Queue", "rq.Queue", "Worker", "SimpleWorker", "rq.SimpleWorker", "Job.fetch"}


@pytest.mark.parametrize("package", ["scheduler", "workers"])
def test_only_state_jobs_builds_rq_queues_workers_and_job_loads(package: str) -> None:
    """A Queue built elsewhere would write pickles again, and a worker built elsewhere
    would run any function; and every job reviewq enqueues must be one a worker runs."""
    allowed_names = {"PLAN_JOB", "REVIEW_JOB", "FINALIZE_JOB"}
    for path in sorted((ROOT / package).rglob("*.py")):
        if path == ROOT / "scheduler" / "state" / "jobs.py":
            continue
        for func, call in _calls(path):
            assert func not in _RQ_BUILDERS, f"{path}:{call.lineno}: {func}(...)"
            if func.endswith((".enqueue_call", ".enqueue")) and func != "self._enqueue":
                first = ast.unparse(call.args[0]) if call.args else ""
                assert first in allowed_names, f"{path}:{call.lineno}: enqueues {first}"


def test_a_review_job_an_older_version_pickled_is_refused_then_run_again_as_json(
    redis: redis_py.Redis, unique: str
) -> None:
    """The upgrade path: a message queued by a pickling reviewq fails to load in a new
    worker (nothing unpickled), and the lost-job sweep dispatches it again as JSON."""
    adm = Admission(redis, review_queue(f"q-{unique}", redis), prefix=f"t:{unique}")
    adm.submit("o/r#1", "sha", ["a"], files=1, plan={})
    (job_id,) = adm.queue.get_job_ids()
    _, member, dispatch = fetch_job(job_id, redis).args
    old = pickle.dumps((REVIEW_JOB, None, (adm.keys.prefix, member, dispatch), {}))
    redis.hset(f"rq:job:{job_id}", "data", zlib.compress(old))
    _run(review_worker([adm.queue], redis))
    assert fetch_job(job_id, redis).get_status() == JobStatus.FAILED
    sweep, now = LostJobSweep(adm, grace_ms=1_000), adm.now_ms()
    assert sweep.sweep(now) == 0 and sweep.sweep(now + 1_000) == 1
    (again,) = adm.queue.get_job_ids()
    assert fetch_job(again, redis).args == (adm.keys.prefix, member, dispatch + 1)
    assert json.loads(zlib.decompress(cast(bytes, redis.hget(f"rq:job:{again}", "data"))))
