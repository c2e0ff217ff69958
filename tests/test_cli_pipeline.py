"""`reviewq estimate` and `reviewq worker`: the CLI doors onto planning and the workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py
from click.testing import CliRunner
from rq import Queue, Worker
from rq.job import JobStatus

from scheduler.cli.main import main
from scheduler.quota.plans import get_preset
from scheduler.sandbox import (
    BASE_PATHS,
    DEV_KEY,
    Latency,
    ProviderConfig,
    create_provider_app,
    serve_in_thread,
)
from scheduler.state.jobs import PUBSUB_POLL_S, ReviewJob, fetch_job, review_queue, review_worker

DIFF = """diff --git a/src/app.py b/src/app.py
--- a/src/app.py
+++ b/src/app.py
@@ -1,2 +1,3 @@
 import os
+import sys
 print(os.name)
diff --git a/poetry.lock b/poetry.lock
--- a/poetry.lock
+++ b/poetry.lock
@@ -1 +1 @@
-a = 1
+a = 2
"""


def _config(tmp_path: Path, redis_url: str, queue: str) -> Path:
    path = tmp_path / "reviewq.toml"
    path.write_text(
        f'redis_url = "{redis_url}"\nqueue_name = "{queue}"\n'
        '[[accounts]]\nname = "synth"\nplan = "synthetic"\napi_key_env = "REVIEWQ_TEST_KEY"\n'
        '[[accounts]]\nname = "zai"\nplan = "zai-pro"\napi_key_env = "REVIEWQ_TEST_KEY"\n'
    )
    return path


def test_estimate_prices_a_diff_against_every_account(tmp_path: Path, redis_url: str) -> None:
    diff = tmp_path / "pr.diff"
    diff.write_text(DIFF)
    config = _config(tmp_path, redis_url, "q")
    result = CliRunner().invoke(
        main, ["--config", str(config), "estimate", "--diff", str(diff), "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["messages"] == 1
    assert data["skipped"] == [{"path": "poetry.lock", "reason": "lockfile"}]
    windows = {a["name"]: {w["name"]: w["cost"] for w in a["windows"]} for a in data["accounts"]}
    assert windows["synth"] == {"requests_5h": 1.0}
    zai_windows = [w.name for w in get_preset("zai-pro").windows]
    assert list(windows["zai"]) == zai_windows and len(zai_windows) == 2
    assert all(cost > 0 for cost in windows["zai"].values())


def test_estimate_needs_a_readable_diff(tmp_path: Path, redis_url: str) -> None:
    config = _config(tmp_path, redis_url, "q")
    missing = tmp_path / "nope.diff"
    result = CliRunner().invoke(main, ["--config", str(config), "estimate", "--diff", str(missing)])
    assert result.exit_code == 2
    assert "does not exist" in result.output


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "is empty"),
        (b"This change fixes the login page.\nThanks!\n", "not a unified diff"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00", "binary file"),
    ],
    ids=["empty", "prose", "binary"],
)
def test_estimate_refuses_a_file_that_is_not_a_diff(
    tmp_path: Path, redis_url: str, content: bytes, says: str
) -> None:
    """Not "0 files": the person gave the wrong file, and is told so (exit 2)."""
    diff = tmp_path / "pr.diff"
    diff.write_bytes(content)
    config = _config(tmp_path, redis_url, "q")
    result = CliRunner().invoke(main, ["--config", str(config), "estimate", "--diff", str(diff)])
    assert result.exit_code == 2 and says in result.output, result.output


def test_worker_burst_exits_when_the_queue_is_empty(
    tmp_path: Path, redis_url: str, unique: str
) -> None:
    """Real processes: the parent spawns an RQ worker, which finds nothing and exits."""
    config = _config(tmp_path, redis_url, f"q-{unique}")
    env = {**os.environ, "REVIEWQ_TEST_KEY": "not-a-real-key"}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from scheduler.cli.main import main; main()",
            "--config",
            str(config),
            "worker",
            "--burst",
            "--processes",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"2 worker process(es) on queue 'q-{unique}'" in done.stdout
    assert "not-a-real-key" not in done.stdout + done.stderr


def test_worker_requeues_the_job_of_a_child_killed_mid_job(
    tmp_path: Path, redis_url: str, unique: str
) -> None:
    """SIGKILL a `reviewq worker` child while it runs a job: the parent replaces the
    child and puts the job back on the queue, where RQ alone would leave it marked
    started until the job timeout, then fail it. The job is a real review call, held
    for 3 s by the provider simulator (workers run only reviewq's own jobs)."""
    queue_name = f"q-{unique}"
    plan = get_preset("synthetic")
    config = ProviderConfig(
        flavour="synthetic", plan=plan, latency=Latency(median_s=3.0, p95_s=3.0), seed=1
    )
    with serve_in_thread(create_provider_app(config)) as sim:
        path = tmp_path / "reviewq.toml"
        path.write_text(
            f'redis_url = "{redis_url}"\nqueue_name = "{queue_name}"\n'
            '[[accounts]]\nname = "synth"\nplan = "synthetic"\n'
            f'base_url = "{sim.url}{BASE_PATHS["synthetic"]}"\n'
            'api_key_env = "REVIEWQ_TEST_KEY"\n'
            '[review]\nsink = "log"\n'
        )
        env = {**os.environ, "REVIEWQ_TEST_KEY": DEV_KEY}
        diff = tmp_path / "pr.diff"
        diff.write_text(DIFF)
        queued = CliRunner().invoke(
            main, ["--config", str(path), "enqueue", "--diff", str(diff), "--pr", "killed"]
        )
        assert queued.exit_code == 0, queued.output
        args = ["--config", str(path), "worker", "--processes", "1"]
        proc = subprocess.Popen(
            [sys.executable, "-c", "from scheduler.cli.main import main; main()", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis_py.Redis.from_url(redis_url)
        queue = review_queue(queue_name, client)
        try:
            job_id, first = _wait(lambda: _review_running(queue), "a review job to start")
            os.kill(first, signal.SIGKILL)
            job = fetch_job(job_id, client)
            finished = lambda: job.get_status(refresh=True) == JobStatus.FINISHED  # noqa: E731
            _wait(finished, "the job to finish")
            assert _running(queue, job_id) is None
            assert first not in {w.pid for w in Worker.all(queue=queue)}  # unregistered
        finally:
            proc.terminate()
            proc.wait(60)
            for key in client.scan_iter(match=f"*{queue_name}*"):
                client.delete(key)
            client.close()


def _review_running(queue: Queue) -> tuple[str, int] | None:
    """(job id, worker pid) of a review job a worker is running, once one is."""
    for worker in Worker.all(queue=queue, job_class=ReviewJob):
        job_id = worker.get_current_job_id()
        if job_id and job_id.startswith("rq-msg-") and worker.pid:
            return job_id, int(worker.pid)
    return None


def _running(queue: Queue, job_id: str) -> int | None:
    """The pid of the worker running `job_id`, if one is."""
    for worker in Worker.all(queue=queue, job_class=ReviewJob):
        if worker.get_current_job_id() == job_id:
            return int(worker.pid or 0) or None
    return None


def _wait(ok: Callable[[], object], what: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (found := ok()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def test_worker_without_accounts_is_a_usage_error(tmp_path: Path, redis_url: str) -> None:
    path = tmp_path / "empty.toml"
    path.write_text(f'redis_url = "{redis_url}"\n')
    result = CliRunner().invoke(main, ["--config", str(path), "worker", "--burst"])
    assert result.exit_code == 2
    assert "no accounts configured" in result.output


def test_worker_with_redis_down_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REVIEWQ_TEST_KEY", "k")  # else the key check exits 2 first
    config = _config(tmp_path, "redis://127.0.0.1:1/0", "q")
    result = CliRunner().invoke(main, ["--config", str(config), "worker", "--burst"])
    assert result.exit_code == 3
    assert "Redis unreachable" in result.output


def test_a_worker_leaves_its_command_channel_within_a_poll(
    redis: redis_py.Redis, unique: str
) -> None:
    """RQ polls the worker's command channel for 60 s at a time, and redis-py 8.2
    waits for that poll on stop: `worker --burst` exited a minute after its last job,
    and a SIGTERMed worker took as long. Ours polls every `PUBSUB_POLL_S`."""
    worker = review_worker([review_queue(f"q-{unique}", redis)], redis)
    worker.subscribe()
    thread = worker.pubsub_thread
    assert thread is not None and thread.sleep_time == PUBSUB_POLL_S <= 1
    worker.unsubscribe()
    thread.join(5 * PUBSUB_POLL_S)
    assert not thread.is_alive()


def test_a_stopping_worker_leaves_the_pubsub_close_to_its_thread(
    redis: redis_py.Redis, unique: str
) -> None:
    """RQ closes the pubsub after a 1 s join while the thread, still in its last poll on
    a busy machine, closes it too: the two resets raced and a worker died in teardown
    ("'NoneType' object has no attribute 'deregister_connect_callback'", seen in CI).
    Only the thread may close it."""
    worker = review_worker([review_queue(f"q-{unique}", redis)], redis)
    worker.subscribe()
    thread, pubsub = worker.pubsub_thread, worker.pubsub
    assert thread is not None and pubsub is not None
    closers: list[str] = []
    close = pubsub.close

    def recorded_close() -> None:
        closers.append(threading.current_thread().name)
        close()

    pubsub.close = recorded_close  # type: ignore[method-assign]
    worker.unsubscribe()
    thread.join(5 * PUBSUB_POLL_S)
    assert not thread.is_alive()
    assert closers == [thread.name], closers
    assert pubsub.connection is None
