"""compose.yaml's Redis users, proven on a real redis-server with the real services.

No Docker engine here, so the redis service's own startup script is taken from
compose.yaml and run with `sh`, its paths moved into a temp dir: it reads the secret
files, writes the ACL file from the rules in `configs: redis-acl` and starts the local
redis-server through a stand-in for the image's entrypoint. Rules and script cannot
drift from the file, because they are the file.

Then each service runs as its own user: the webhook app (`web`) takes a signed GitHub
delivery, `reviewq worker` (`worker`) plans, reviews against the provider simulator
and posts to the fake GitHub, and RQ's dashboard calls (`dashboard`) list, requeue and
delete jobs. The ACL log must stay empty through all of that, which shows the rules
allow all they need; then each user is refused what it must not run. The stand-in
entrypoint adds one test-only admin user, only to read that log.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis as redis_py
import yaml
from click.testing import CliRunner
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue, Worker
from rq.job import Job, JobStatus, requeue_job
from rq.serializers import JSONSerializer
from webhook_support import gh_pr

from scheduler.admission import REVIEW_JOB
from scheduler.cli.main import main
from scheduler.config import load_settings
from scheduler.ops.deployment import deployment_prefix
from scheduler.quota.plans import get_preset
from scheduler.sandbox import (
    BASE_PATHS,
    DEV_KEY,
    Latency,
    ProviderConfig,
    create_provider_app,
    serve_in_thread,
)
from scheduler.sandbox.github import FakeGitHubServer, serve_fake_github
from scheduler.sandbox.localredis import find_server_binary, free_port
from scheduler.state.jobs import review_queue, review_worker
from scheduler.state.keys import Keys
from scheduler.state.records import read_pr
from scheduler.webhook import create_app, redis_client, sign
from workers.review.changes import ChangedFile
from workers.supervisor import requeue_orphans

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text("utf-8"))
USERS = ("web", "worker", "dashboard")
WEBHOOK_SECRET = "acl-webhook-secret-" + uuid.uuid4().hex
# Where the script and healthcheck look, in the container, and where they look here.
SECRETS_DIR, RUN_DIR = "/run/secrets", "/run/reviewq-redis"
RULES_FILE = "/etc/reviewq/redis-acl.rules"
CLI = "from scheduler.cli.main import main; main()"


def acl_rules() -> dict[str, str]:
    """`configs: redis-acl` of compose.yaml: user name -> its ACL rules."""
    content: str = COMPOSE["configs"]["redis-acl"]["content"]
    lines = [ln.strip() for ln in content.splitlines() if ln.strip()]
    return dict(cast(tuple[str, str], tuple(ln.split(" ", 1))) for ln in lines)


def _unescaped(text: str) -> str:
    """What the container runs: Compose turns `$$` into `$`. A lone `$` would be
    interpolated by Compose from the operator's environment instead, so none may be."""
    assert re.search(r"\$(?!\$)", text.replace("$$", "")) is None, text
    return text.replace("$$", "$")


def _moved(text: str, tmp: Path) -> str:
    for container, here in (
        (SECRETS_DIR, tmp / "secrets"),
        (RULES_FILE, tmp / "acl.rules"),
        (RUN_DIR, tmp / "run"),
    ):
        if container in text:
            text = text.replace(container, str(here))
    return text


# The image's docker-entrypoint.sh, here: add the test's admin to the ACL file the
# script wrote, then run redis-server on a private port and directory.
_ENTRYPOINT = """#!/bin/sh
set -eu
prev=""
for arg in "$@"; do
  if [ "$prev" = "--aclfile" ]; then acl="$arg"; fi
  prev="$arg"
done
printf 'user testadmin on >%s ~* &* +@all\\n' "$TEST_ADMIN_PASSWORD" >> "$acl"
exec "$@" --port "$TEST_PORT" --bind 127.0.0.1 --dir "$TEST_DIR" --save ""
"""


@dataclass
class AclRedis:
    port: int
    passwords: dict[str, str]
    admin: redis_py.Redis
    directory: Path
    pid: int

    def url(self, user: str) -> str:
        return f"redis://{user}:{self.passwords[user]}@127.0.0.1:{self.port}/0"

    def client(self, user: str) -> redis_py.Redis:
        return redis_py.Redis.from_url(self.url(user))

    def denials(self) -> list[dict[str, Any]]:
        """ACL log entries of the compose users (not the test's admin)."""
        log = cast(list[dict[str, Any]], self.admin.acl_log())
        return [e for e in log if e.get("username") in USERS or e.get("reason") == "auth"]


def _script_command(tmp: Path, passwords: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The redis service's command, pointed at `tmp`, and the environment it runs in."""
    (tmp / "secrets").mkdir()
    for user, password in passwords.items():
        (tmp / "secrets" / f"redis_{user}_password").write_text(password)
    (tmp / "acl.rules").write_text(COMPOSE["configs"]["redis-acl"]["content"])
    bindir = tmp / "bin"
    bindir.mkdir()
    stub = bindir / "docker-entrypoint.sh"
    stub.write_text(_ENTRYPOINT)
    stub.chmod(0o755)
    (bindir / "redis-server").symlink_to(find_server_binary())
    command = list(COMPOSE["services"]["redis"]["command"])
    command[-1] = _moved(_unescaped(command[-1]), tmp)
    env = {"PATH": f"{bindir}:{os.environ['PATH']}", "TEST_DIR": str(tmp)}
    return command, env


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclRedis]:
    tmp = tmp_path_factory.mktemp("acl")
    passwords = {user: secrets.token_hex(32) for user in USERS}
    admin_password = secrets.token_hex(16)
    port = free_port()
    command, env = _script_command(tmp, passwords)
    env |= {"TEST_PORT": str(port), "TEST_ADMIN_PASSWORD": admin_password}
    log = (tmp / "server.log").open("wb")
    proc = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    admin = redis_py.Redis(port=port, username="testadmin", password=admin_password)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                pytest.fail(f"redis exited: {(tmp / 'server.log').read_text(errors='replace')}")
            try:
                admin.ping()
                break
            except redis_py.ConnectionError:
                assert time.monotonic() < deadline, "redis did not start within 10 s"
                time.sleep(0.05)
        yield AclRedis(port, passwords, admin, tmp, proc.pid)
    finally:
        admin.close()
        proc.terminate()
        proc.wait(10)
        log.close()


# --- the startup script ---------------------------------------------------------------


def test_the_acl_file_holds_hashes_and_no_password_reaches_the_process(
    acl_redis: AclRedis,
) -> None:
    acl_file = acl_redis.directory / "run" / "users.acl"
    text = acl_file.read_text()
    assert text.startswith("user default off resetpass resetkeys resetchannels -@all\n")
    for user, rules in acl_rules().items():
        assert re.search(rf"^user {user} on #[0-9a-f]{{64}} {re.escape(rules)}$", text, re.M)
    assert acl_file.stat().st_mode & 0o077 == 0
    assert (acl_redis.directory / "run").stat().st_mode & 0o077 == 0
    cmdline = Path(f"/proc/{acl_redis.pid}/cmdline").read_bytes()
    environ = Path(f"/proc/{acl_redis.pid}/environ").read_bytes()
    assert b"redis-server" in cmdline
    for password in acl_redis.passwords.values():
        assert password not in text
        assert password.encode() not in cmdline and password.encode() not in environ


def _once(port: int, username: str | None = None, password: str | None = None) -> redis_py.Redis:
    """A client that does not retry: redis-py retries a failed AUTH (a ConnectionError)
    with backoff, seconds per attempt."""
    return redis_py.Redis(
        port=port, username=username, password=password, retry=Retry(NoBackoff(), 0)
    )


def test_the_default_user_cannot_log_in(acl_redis: AclRedis) -> None:
    with pytest.raises(redis_py.AuthenticationError):
        _once(acl_redis.port).ping()
    for password in acl_redis.passwords.values():
        with pytest.raises(redis_py.AuthenticationError):
            _once(acl_redis.port, username="default", password=password).ping()


def test_each_user_logs_in_with_its_own_password_only(acl_redis: AclRedis) -> None:
    for user in USERS:
        assert acl_redis.client(user).ping()
        other = acl_redis.passwords["web" if user != "web" else "worker"]
        with pytest.raises(redis_py.AuthenticationError):
            _once(acl_redis.port, username=user, password=other).ping()


def test_the_healthcheck_authenticates_and_passes(acl_redis: AclRedis) -> None:
    test = COMPOSE["services"]["redis"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    shell = _moved(_unescaped(test[1]), acl_redis.directory)
    shell = shell.replace("redis-cli ", f"redis-cli -p {acl_redis.port} ", 1)
    done = subprocess.run(["sh", "-c", shell], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stdout + done.stderr
    health = (acl_redis.directory / "run" / "healthcheck.pw").read_text()
    client = redis_py.Redis(port=acl_redis.port, username="healthcheck", password=health)
    assert client.ping()
    with pytest.raises(redis_py.exceptions.NoPermissionError):
        client.get("anything")


@pytest.mark.parametrize(
    ("password", "complaint"),
    [("short", "at least 32"), ("x" * 40 + "@/:", "only A-Z")],
)
def test_a_weak_or_url_unsafe_password_stops_redis_from_starting(
    tmp_path: Path, password: str, complaint: str
) -> None:
    passwords = {user: secrets.token_hex(32) for user in USERS} | {"worker": password}
    command, env = _script_command(tmp_path, passwords)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=10)
    assert done.returncode != 0 and complaint in done.stderr
    assert "redis_worker_password" in done.stderr and password not in done.stderr


# --- every service, as its user -------------------------------------------------------

FILES = [
    ChangedFile(
        filename="src/app.py",
        additions=2,
        changes=2,
        patch="@@ -1,2 +1,4 @@\n import os\n+import sys\n+print(sys.argv)\n print(os.name)",
    ),
]


def _config(tmp: Path, queue: str, sim_url: str, fake: FakeGitHubServer) -> Path:
    path = tmp / "reviewq.toml"
    path.write_text(
        f'queue_name = "{queue}"\n'
        '[webhook]\nrepositories = ["*"]\n'
        '[[accounts]]\nname = "synth"\nplan = "synthetic"\n'
        f'base_url = "{sim_url}{BASE_PATHS["synthetic"]}"\napi_key_env = "REVIEWQ_ACL_KEY"\n'
        f'[review]\nsink = "github"\ngithub_url = "{fake.url}"\n'
        'github_token_env = "REVIEWQ_ACL_GH_TOKEN"\n'
    )
    return path


@pytest.fixture
def fake_github() -> Iterator[FakeGitHubServer]:
    with serve_fake_github() as server:
        yield server


def test_web_and_worker_review_a_pr_with_no_acl_denial(
    acl_redis: AclRedis, fake_github: FakeGitHubServer, tmp_path: Path
) -> None:
    """The deployment's path, each process with only its own credentials: a GitHub
    delivery to the app (web), `reviewq worker` plans, reviews and posts (worker), and
    `reviewq inspect` and the orphan requeue read it back (worker)."""
    unique = "acl" + uuid.uuid4().hex[:8]
    queue = f"q-{unique}"
    sha = "ab" * 20
    fake_github.control.add_pr(unique, "app", 3, sha, files=FILES)
    plan = get_preset("synthetic")
    fast = Latency(median_s=0.05, p95_s=0.05)
    sim_config = ProviderConfig(flavour="synthetic", plan=plan, latency=fast)
    acl_redis.admin.acl_log_reset()
    with serve_in_thread(create_provider_app(sim_config)) as sim:
        config = _config(tmp_path, queue, sim.url, fake_github)
        settings = load_settings(config, env={"REDIS_URL": acl_redis.url("web")})
        web = redis_client(settings.redis_url)
        app = create_app(settings, web, env={"GITHUB_WEBHOOK_SECRET": WEBHOOK_SECRET})
        payload = json.dumps(gh_pr("opened", number=3, sha=sha, owner=unique)).encode()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "pull_request",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(WEBHOOK_SECRET.encode(), payload),
        }
        with serve_in_thread(app) as handle, httpx.Client(base_url=handle.url) as http:
            first = http.post("/webhooks/github", content=payload, headers=headers)
            assert first.status_code == 202, first.text
            again = http.post("/webhooks/github", content=payload, headers=headers)
            assert again.json()["status"] == "duplicate"
            assert http.get("/healthz").status_code == 200
            assert http.get("/metrics").status_code == 200

            worker_env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")},
                "REDIS_URL": acl_redis.url("worker"),
                "REVIEWQ_ACL_KEY": DEV_KEY,
                "REVIEWQ_ACL_GH_TOKEN": fake_github.token,
            }
            log = (tmp_path / "worker.log").open("wb")
            proc = subprocess.Popen(
                [sys.executable, "-c", CLI, "--config", str(config), "worker"],
                env=worker_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                keys = Keys(deployment_prefix(settings))
                deadline = time.monotonic() + 60
                while True:
                    view = read_pr(web, keys, f"{unique}/app#3")
                    if view is not None and view.meta.status == "done":
                        break
                    assert proc.poll() is None, (tmp_path / "worker.log").read_text()
                    assert time.monotonic() < deadline, f"not reviewed: {view}"
                    time.sleep(0.1)
            finally:
                os.kill(proc.pid, signal.SIGTERM)
                proc.wait(60)
                log.close()
            assert proc.returncode == 0, (tmp_path / "worker.log").read_text()
        web.close()

    (review,) = fake_github.control.reviews()
    assert review["commit_id"] == sha
    inspected = CliRunner().invoke(
        main,
        ["--config", str(config), "inspect", "--json"],
        env={"REDIS_URL": acl_redis.url("worker")},
    )
    assert inspected.exit_code == 0, inspected.output
    worker = acl_redis.client("worker")
    assert requeue_orphans(worker, review_queue(queue, worker), {2**22 + 1}) == []
    worker.close()
    assert acl_redis.denials() == []


def test_the_dashboard_lists_requeues_and_deletes_rq_jobs_only(acl_redis: AclRedis) -> None:
    """What rq-dashboard does with `RQ_DASHBOARD_JSON`, through RQ's own calls: list
    queues, workers and registries (cleaning them up), requeue a failed job, delete
    one, empty a queue. Its user sees RQ's keys and nothing of reviewq's."""
    name = "dash-" + uuid.uuid4().hex[:8]
    web, worker, dash = (acl_redis.client(u) for u in USERS)
    failing = review_queue(name, web).enqueue_call(REVIEW_JOB, args=("nope", "x|1.0", 1))
    review_worker([review_queue(name, worker)], worker).work(burst=True, logging_level="CRITICAL")
    assert failing.get_status(refresh=True) == JobStatus.FAILED
    acl_redis.admin.acl_log_reset()

    queues = Queue.all(connection=dash, serializer=JSONSerializer)
    queue = next(q for q in queues if q.name == name)
    assert queue.count == 0 and Worker.all(connection=dash) is not None
    for registry in (
        queue.failed_job_registry,
        queue.finished_job_registry,
        queue.started_job_registry,
        queue.scheduled_job_registry,
        queue.deferred_job_registry,
        queue.canceled_job_registry,
    ):
        registry.get_job_count()
    assert queue.failed_job_registry.get_job_ids() == [failing.id]
    shown = Job.fetch(failing.id, connection=dash, serializer=JSONSerializer)
    assert shown.func_name == REVIEW_JOB and shown.args == ["nope", "x|1.0", 1]
    requeue_job(failing.id, connection=dash, serializer=JSONSerializer)
    assert queue.job_ids == [failing.id]
    Job.fetch(failing.id, connection=dash, serializer=JSONSerializer).delete()
    review_queue(name, web).enqueue_call(REVIEW_JOB, args=("nope", "x|1.0", 2))
    queue.empty()
    assert queue.count == 0
    assert acl_redis.denials() == []

    with pytest.raises(redis_py.exceptions.NoPermissionError):
        dash.get("reviewq:anything")
    with pytest.raises(redis_py.exceptions.NoPermissionError):
        dash.hgetall("reviewq:limiter:anything")
    for client in (web, worker, dash):
        client.close()


# --- and what each user may not do ----------------------------------------------------

# One per family that must stay closed: wiping data, reconfiguring or stopping the
# server (CONFIG SET can write files, MODULE LOAD runs code), reading other clients or
# users, replication, persisting on demand, server-side functions. Checked with ACL
# DRYRUN, which asks the ACL without running anything (SHUTDOWN included).
FORBIDDEN: list[tuple[str, ...]] = [
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("SWAPDB", "0", "1"),
    ("CONFIG", "GET", "*"),
    ("CONFIG", "SET", "dir", "/tmp"),
    ("DEBUG", "SLEEP", "0"),
    ("MODULE", "LIST"),
    ("MODULE", "LOAD", "/tmp/x.so"),
    ("SHUTDOWN", "NOSAVE"),
    ("KEYS", "*"),
    ("ACL", "LIST"),
    ("ACL", "SETUSER", "evil", "on", ">x", "+@all"),
    ("CLIENT", "LIST"),
    ("CLIENT", "KILL", "ID", "1"),
    ("MONITOR",),
    ("REPLICAOF", "127.0.0.1", "1"),
    ("SAVE",),
    ("BGREWRITEAOF",),
    ("SCRIPT", "FLUSH"),
    ("SCRIPT", "KILL"),
    ("FUNCTION", "FLUSH"),
    ("FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('x', function() end)"),
    ("FCALL", "x", "0"),
    ("MIGRATE", "127.0.0.1", "1", "k", "0", "1"),
    ("RESTORE", "k", "0", "x"),
    ("SORT", "k"),
]


@pytest.mark.parametrize("user", USERS)
def test_no_service_may_run_admin_or_destructive_commands(acl_redis: AclRedis, user: str) -> None:
    allowed = []
    for command in FORBIDDEN:
        verdict = acl_redis.admin.execute_command("ACL", "DRYRUN", user, *command)
        if b"no permissions" not in verdict:
            allowed.append((command, verdict))
    assert allowed == []


@pytest.mark.parametrize("user", USERS)
def test_refused_commands_are_refused_when_really_sent(acl_redis: AclRedis, user: str) -> None:
    """The dry run agrees with a real connection (DEBUG and MODULE are refused even
    before the ACL, by the server's own enable-*-command defaults)."""
    client = acl_redis.client(user)
    for command in [
        ("FLUSHALL",),
        ("CONFIG", "GET", "*"),
        ("ACL", "LIST"),
        ("SCRIPT", "FLUSH"),
        ("FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('x', function() end)"),
    ]:
        with pytest.raises(redis_py.exceptions.NoPermissionError):
            client.execute_command(*command)
    client.close()


@pytest.mark.parametrize(
    ("user", "command"),
    [
        ("web", ("SUBSCRIBE", "rq:pubsub:w")),
        ("web", ("PUBLISH", "rq:pubsub:w", "x")),
        ("worker", ("SUBSCRIBE", "other")),
        ("worker", ("PUBLISH", "rq:pubsub:w", "x")),
        ("dashboard", ("SUBSCRIBE", "rq:pubsub:w")),
        ("dashboard", ("SET", "reviewq:x", "1")),
        ("dashboard", ("EVAL", "return redis.call('GET', 'reviewq:x')", "0")),
    ],
)
def test_channels_and_keys_outside_a_users_share_are_refused(
    acl_redis: AclRedis, user: str, command: tuple[str, ...]
) -> None:
    client = acl_redis.client(user)
    with pytest.raises((redis_py.exceptions.NoPermissionError, redis_py.ResponseError)) as err:
        client.execute_command(*command)
    assert re.search(r"NOPERM|permission|can't access", str(err.value)), err.value
    client.close()
