"""`reviewq bench webhook`: signed deliveries per second through a real `reviewq serve`.

The server runs as its own process (one uvicorn process, as deployed), on a private
Redis unless REDIS_URL is set; this process drives it over `--concurrency` keep-alive
connections with a lean raw HTTP/1.1 client, or httpx with `--client httpx` (see
`scheduler.bench.load` for why the client's CPU matters on a machine the server
shares). Every delivery is a signed
`pull_request` `opened` event shaped and sized like GitHub's, for a distinct PR and
head, so every one takes the full path: signature, parse, dedupe claim, enqueue_pr,
confirm. Bodies are built and signed before the clock starts, since GitHub's own
signing does not run on the server's CPU. A warm-up (not timed) lets connections,
caches and Redis scripts settle first.

The bar (issue 5): at least 500 deliveries/s with p99 under 50 ms. `run_webhook_bench`
returns the figures and whether the bar was met; `reviewq bench webhook`
(scheduler.cli.bench) prints them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import redis as redis_lib
from rq import Queue

from scheduler.bench.load import Client, Delivery, drive
from scheduler.bench.load import run as run_async
from scheduler.ops.stats import percentile
from scheduler.sandbox.localredis import LocalRedis, free_port
from scheduler.state.jobs import review_queue
from scheduler.webhook.github import sign

__all__ = [
    "BAR_P99_MS",
    "BAR_RATE",
    "ServeError",
    "WebhookBench",
    "redis_server",
    "run_webhook_bench",
]

# The names tests/chaos/test_webhook_flood.py drives a server with.
_drive, _run = drive, run_async

BAR_RATE = 500.0  # deliveries per second
BAR_P99_MS = 50.0
_START_TIMEOUT_S = 30.0


class ServeError(RuntimeError):
    """The `reviewq serve` under test exited, or never answered its health check."""


@dataclass(frozen=True, slots=True)
class WebhookBench:
    deliveries: int
    concurrency: int
    warmup: int
    payload_bytes: int
    seconds: float
    deliveries_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    statuses: dict[str, int]
    enqueued: int
    server: dict[str, str] = field(default_factory=dict)
    client: str = "raw"

    @property
    def met(self) -> bool:
        return self.deliveries_per_s >= BAR_RATE and self.p99_ms < BAR_P99_MS and not self.errors

    def to_json(self) -> dict[str, Any]:
        bar = {"deliveries_per_s": BAR_RATE, "p99_ms_below": BAR_P99_MS, "met": self.met}
        return {**asdict(self), "bar": bar}


def _user(login: str, n: int) -> dict[str, Any]:
    base = f"https://api.github.com/users/{login}"
    links = ("followers", "following", "gists", "starred", "subscriptions", "orgs", "repos")
    return {
        "login": login,
        "id": n,
        "node_id": f"MDQ6VXNlcj{n:08d}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{n}?v=4",
        "url": base,
        "html_url": f"https://github.com/{login}",
        **{f"{name}_url": f"{base}/{name}" for name in links},
        "events_url": f"{base}/events{{/privacy}}",
        "type": "User",
        "site_admin": False,
    }


def _repo(owner: str, name: str, n: int) -> dict[str, Any]:
    """A repository object with GitHub's many URL fields: most of a payload's bytes."""
    base = f"https://api.github.com/repos/{owner}/{name}"
    kinds = [
        *("forks", "keys", "collaborators", "teams", "hooks", "issue_events", "events"),
        *("assignees", "branches", "tags", "blobs", "git_tags", "git_refs", "trees"),
        *("statuses", "languages", "stargazers", "contributors", "subscribers", "commits"),
        *("git_commits", "comments", "issue_comment", "contents", "compare", "merges"),
        *("archive", "downloads", "issues", "pulls", "milestones", "notifications"),
        *("labels", "releases", "deployments", "subscription"),
    ]
    return {
        "id": n,
        "node_id": f"MDEwOlJlcG9zaXRvcn{n:08d}",
        "name": name,
        "full_name": f"{owner}/{name}",
        "private": False,
        "owner": _user(owner, n + 1),
        "html_url": f"https://github.com/{owner}/{name}",
        "description": "A repository the benchmark reviews",
        "fork": False,
        "url": base,
        **{f"{kind}_url": f"{base}/{kind}{{/id}}" for kind in kinds},
        "created_at": "2024-01-01T00:00:00Z",
        "pushed_at": "2026-01-01T00:00:00Z",
        "default_branch": "main",
        "size": 1234,
        "stargazers_count": 10,
        "open_issues_count": 3,
        "topics": ["review", "bench"],
        "visibility": "public",
    }


def payload(i: int, run: str) -> dict[str, Any]:
    """A `pull_request` `opened` event for PR number i+1 of repo `run`, head unique."""
    repo = _repo("bench", run, 1000)
    sha = uuid.uuid5(uuid.NAMESPACE_OID, f"{run}/{i}").hex + f"{i:08x}"
    number = i + 1
    head = {"label": f"bench:f{i}", "ref": f"f{i}", "sha": sha, "user": repo["owner"]}
    base = {"label": "bench:main", "ref": "main", "sha": "0" * 40, "user": repo["owner"]}
    url = f"{repo['url']}/pulls/{number}"
    links = ("commits", "review_comments", "comments", "statuses", "issue", "html", "diff")
    pr = {
        "url": url,
        **{f"{kind}_url": f"{url}/{kind}" for kind in links},
        "_links": {kind: {"href": f"{url}/{kind}"} for kind in links},
        "labels": [{"id": n, "name": f"label-{n}", "color": "ededed"} for n in range(3)],
        "requested_reviewers": [_user(f"reviewer{n}", 100 + n) for n in range(2)],
        "id": 5_000_000 + i,
        "number": number,
        "state": "open",
        "locked": False,
        "title": f"Change {i}",
        "user": _user("author", 7),
        "body": "Refactors the parser and adds tests. " * 8,
        "created_at": "2026-01-01T00:00:00Z",
        "draft": False,
        "head": {**head, "repo": repo},
        "base": {**base, "repo": repo},
        "author_association": "MEMBER",
        "merged": False,
        "commits": 3,
        "additions": 120,
        "deletions": 40,
        "changed_files": 6,
    }
    return {
        "action": "opened",
        "number": number,
        "pull_request": pr,
        "repository": repo,
        "sender": _user("author", 7),
    }


def deliveries(count: int, secret: bytes, run: str) -> list[Delivery]:
    """Bodies and headers, signed ahead of time."""
    out = []
    for i in range(count):
        body = json.dumps(payload(i, run), separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "pull_request",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(secret, body),
            "User-Agent": "GitHub-Hookshot/bench",
        }
        out.append((body, headers))
    return out


@contextlib.contextmanager
def _serve_process(redis_url: str, queue: str, secret: str, workers: int = 1) -> Iterator[str]:
    """`reviewq serve` as a child process on a free port, stopped with SIGTERM."""
    port = free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as config:
        config.write('# reviewq bench webhook\n[webhook]\nrepositories = ["*"]\nrepo_rate = 0\n')
    env = {**os.environ, "REDIS_URL": redis_url, "REVIEWQ_QUEUE": queue}
    env["GITHUB_WEBHOOK_SECRET"] = secret
    env.pop("GITLAB_WEBHOOK_TOKEN", None)
    command = [sys.executable, "-c", "from scheduler.cli.main import main; main()"]
    command += ["--config", config.name, "serve", "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        os.unlink(config.name)


def _wait_ready(proc: subprocess.Popen[str], url: str) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise ServeError(f"reviewq serve exited with {proc.returncode}:\n{err}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise ServeError(f"reviewq serve did not answer within {_START_TIMEOUT_S:g} s")


def _server_stack() -> dict[str, str]:
    """What uvicorn's "auto" picks in the child: the C parser and loop if installed."""
    found = {name: importlib.util.find_spec(name) is not None for name in ("httptools", "uvloop")}
    return {
        "http": "httptools" if found["httptools"] else "h11",
        "loop": "uvloop" if found["uvloop"] else "asyncio",
    }


def run_webhook_bench(
    redis_url: str,
    count: int,
    concurrency: int,
    warmup: int,
    workers: int = 1,
    client: Client = "raw",
) -> WebhookBench:
    """One run against a fresh queue on `redis_url`; the queue is deleted afterwards."""
    run = f"bench-{uuid.uuid4().hex[:10]}"
    secret = secrets.token_hex(16)
    batch = deliveries(warmup + count, secret.encode(), run)
    store = redis_lib.Redis.from_url(redis_url)
    queue = review_queue(run, store)
    try:
        with _serve_process(redis_url, run, secret, workers) as url:
            if warmup:
                run_async(drive(url, batch[:warmup], concurrency, client))
            timed = drive(url, batch[warmup:], concurrency, client)
            latencies, statuses, elapsed = run_async(timed)
        enqueued = queue.count
    finally:
        _cleanup(store, queue, run)
        store.close()
    ms = [x * 1000 for x in latencies]
    return WebhookBench(
        deliveries=count,
        concurrency=concurrency,
        warmup=warmup,
        payload_bytes=len(batch[0][0]),
        seconds=round(elapsed, 3),
        deliveries_per_s=round(count / elapsed, 1),
        p50_ms=round(percentile(ms, 50) or 0.0, 2),
        p99_ms=round(percentile(ms, 99) or 0.0, 2),
        max_ms=round(max(ms, default=0.0), 2),
        errors=sum(n for status, n in statuses.items() if status != "202"),
        statuses=dict(statuses),
        enqueued=enqueued - warmup,
        server={**_server_stack(), "workers": str(workers)},
        client=client,
    )


def _cleanup(client: redis_lib.Redis, queue: Queue, run: str) -> None:
    """A user's REDIS_URL gets back what it had: the bench's queue, jobs and PR state go."""
    with contextlib.suppress(redis_lib.RedisError):
        queue.delete(delete_jobs=True)
        for key in client.scan_iter(match=f"reviewq:{run}:*", count=1000):
            client.delete(key)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """REDIS_URL if set, else a private server, stopped on the way out."""
    url = os.environ.get("REDIS_URL", "").strip()
    server = None if url else LocalRedis()
    try:
        yield server.start() if server else url
    finally:
        if server:
            server.stop()
