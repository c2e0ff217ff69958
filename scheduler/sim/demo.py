"""`reviewq demo`: the whole pipeline on one machine, with no keys and no network.

Every part is the real one except the two remote services: a private Redis, the
webhook server (a separate process, serving `scheduler.webhook`), `reviewq`'s RQ
worker processes with the Lua limiter and the waker, the provider simulator (which
enforces Synthetic's quota on its own and referees it) and the fake GitHub (which
lists each PR's files and receives the posted reviews). PRs arrive the way they do in
production: as signed `pull_request` webhooks. Time is compressed as in `simulate`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import json
import multiprocessing as mp
import time
import uuid
from collections import Counter
from typing import Any

import httpx

from scheduler.config import Settings
from scheduler.sandbox.github import DEV_GITHUB_TOKEN, FakeGitHubServer, serve_fake_github
from scheduler.sandbox.localredis import free_port
from scheduler.sim.run import SimRun
from scheduler.sim.scenario import PrSpec, Scenario
from scheduler.sim.simulate import synthetic_diff
from workers.review.changes import ChangedFile
from workers.review.diff import parse_unified_diff
from workers.runtime import RuntimeSpec

__all__ = ["WebhookIntake", "demo_scenario"]

_SECRET_ENV = "REVIEWQ_DEMO_WEBHOOK_SECRET"
_TOKEN_ENV = "REVIEWQ_DEMO_GITHUB_TOKEN"


def demo_scenario(time_scale: float = 300.0) -> Scenario:
    """Synthetic's plan (500 requests per rolling 5 h), one 600-file-sized PR first and
    small PRs arriving behind it for hours. At x300, 5 h pass in one real minute."""
    return Scenario.model_validate(
        {
            "time_scale": time_scale,
            "duration": "9h",
            "workers": 2,
            "policy": "fair",
            "accounts": [
                {
                    "name": "synthetic",
                    "plan": "synthetic",
                    "policy": {"headroom": 0.1, "pr_share": 0.2, "reserve": 0.2},
                }
            ],
            "latency": {"median": "8s", "p95": "20s"},
            "prs": [{"id": "acme/monorepo#300", "at": 0, "files": 140, "lines_per_file": 900}],
            "generators": [
                {
                    "prefix": "acme/api",
                    "count": 8,
                    "files": 4,
                    "lines_per_file": 300,
                    "start": "10m",
                    "every": "35m",
                },
                {
                    "prefix": "acme/web",
                    "count": 5,
                    "files": 9,
                    "lines_per_file": 150,
                    "start": "25m",
                    "every": "55m",
                },
            ],
        }
    )


def _serve(settings: Settings, port: int, env: dict[str, str]) -> None:
    """The webhook server's process body: what `reviewq serve` runs, on loopback."""
    import os

    import uvicorn

    from scheduler.webhook import create_app

    os.environ.update(env)
    app = create_app(settings, env=env)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


@dataclasses.dataclass
class WebhookIntake:
    """Delivers each PR as GitHub would: the PR exists on the (fake) GitHub, then a
    signed `pull_request` event reaches `/webhooks/github`. Along the way it sends what
    a real endpoint also gets: a `ping`, a redelivery, a draft, and a forged signature."""

    secret: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    outcomes: Counter[str] = dataclasses.field(default_factory=Counter)
    github: FakeGitHubServer | None = None
    url: str = ""
    last_reviews: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def prepare(self, stack: contextlib.ExitStack, spec: RuntimeSpec) -> RuntimeSpec:
        self.github = stack.enter_context(serve_fake_github())
        stack.callback(self._collect)  # runs before the fake GitHub stops
        env = {_SECRET_ENV: self.secret}
        settings = spec.settings.model_copy(
            update={
                "webhook": spec.settings.webhook.model_copy(
                    update={"github_secret_env": _SECRET_ENV, "repositories": ("acme/*",)}
                )
            }
        )
        self.url = stack.enter_context(_webhook_server(settings, env))
        self._send("ping", {"zen": "Keep it logically awesome.", "hook_id": 1})
        return dataclasses.replace(
            spec,
            sink="github",
            github_url=self.github.url,
            github_token_env=_TOKEN_ENV,
            env={**(spec.env or {}), _TOKEN_ENV: DEV_GITHUB_TOKEN},
        )

    def deliver(self, run: SimRun, pr: PrSpec) -> None:
        assert self.github is not None
        owner_repo, number = pr.id.split("#")
        owner, repo = owner_repo.split("/")
        sha = hashlib.sha1(pr.id.encode()).hexdigest()
        files = parse_unified_diff(synthetic_diff(pr, run.scenario.line_chars))
        self.github.control.add_pr(owner, repo, int(number), sha, files=files)
        event = _pull_request_event("opened", owner, repo, int(number), sha, files)
        delivery = self._send("pull_request", event)
        if pr.id.endswith("#2"):
            self._send("pull_request", event, delivery=delivery)  # a redelivery
        if pr.id.endswith("#3"):
            self._send("pull_request", event, forged=True)
            draft = _pull_request_event("opened", owner, "drafts", int(number), sha, files)
            draft["pull_request"]["draft"] = True
            self._send("pull_request", draft)

    @property
    def control(self) -> Any:
        """The fake forge's control client (the GitLab intake has one too)."""
        assert self.github is not None
        return self.github.control

    def reviews(self) -> list[dict[str, Any]]:
        return self.control.reviews() if self.github is not None else []

    def _collect(self) -> None:
        if self.github is not None:
            self.last_reviews = self.github.control.reviews()

    def _send(
        self, event: str, body: dict[str, Any], *, delivery: str | None = None, forged: bool = False
    ) -> str:
        raw = json.dumps(body).encode()
        key = b"not-the-secret" if forged else self.secret.encode()
        delivery = delivery or str(uuid.uuid4())
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": "sha256=" + hmac.new(key, raw, hashlib.sha256).hexdigest(),
        }
        response = httpx.post(f"{self.url}/webhooks/github", content=raw, headers=headers)
        self.outcomes[_outcome(response)] += 1
        return delivery


def _outcome(response: httpx.Response) -> str:
    if response.status_code == 401:
        return "rejected (bad signature)"
    try:
        detail = response.json()
    except ValueError:
        detail = {}
    label = str(detail.get("result") or detail.get("status") or response.status_code)
    return f"{response.status_code} {label}"


def _pull_request_event(
    action: str, owner: str, repo: str, number: int, sha: str, files: list[ChangedFile]
) -> dict[str, Any]:
    """The fields of GitHub's `pull_request` payload that a handler reads."""
    full = f"{owner}/{repo}"
    return {
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "draft": False,
            "state": "open",
            "title": f"{full}#{number}: {len(files)} files",
            "head": {"sha": sha, "ref": f"feature-{number}", "repo": {"full_name": full}},
            "base": {"ref": "main", "repo": {"full_name": full}},
            "html_url": f"https://github.com/{full}/pull/{number}",
        },
        "repository": {"full_name": full, "name": repo, "owner": {"login": owner}},
        "installation": {"id": 1},
    }


@contextlib.contextmanager
def _webhook_server(settings: Settings, env: dict[str, str]) -> Any:
    """A separate process, as in production; stopped (and reaped) on exit."""
    port = free_port()
    proc = mp.get_context("spawn").Process(
        target=_serve, args=(settings, port, env), name="reviewq-serve", daemon=True
    )
    proc.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def _wait_healthy(url: str, proc: Any) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not proc.is_alive():
            raise RuntimeError(f"the webhook server exited with code {proc.exitcode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError("the webhook server did not become healthy within 30 s")
