"""Helpers shared by the webhook tests: a served app, deliveries as the forges send them.

The app runs under uvicorn on a kernel-picked port in a thread and is called over real
HTTP, against the session's real Redis; each test gets a queue of its own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import httpx
from rq import Queue

from scheduler.admission import Admission
from scheduler.config import Settings
from scheduler.config.webhook import WebhookSettings
from scheduler.sandbox import serve_in_thread
from scheduler.state.records import PrMeta
from scheduler.webhook import WebhookService, create_app, redis_client, sign

# `delivery=OMIT` sends no delivery id header; None (the default) sends a fresh one.
OMIT = ""
SECRET = "gh-test-secret-0123456789"
TOKEN = "gl-test-token-0123456789"
ENV = {"GITHUB_WEBHOOK_SECRET": SECRET, "GITLAB_WEBHOOK_TOKEN": TOKEN}


OPEN = WebhookSettings(repositories=("*",))  # every repository may be reviewed


def new_delivery() -> str:
    """A delivery id as GitHub makes them (a GUID)."""
    return str(uuid.uuid4())


@dataclass
class Hook:
    """A running app and what a test checks afterwards: its queue and PR state."""

    url: str
    http: httpx.Client
    service: WebhookService
    queue: Queue

    @property
    def admission(self) -> Admission:
        return self.service.admission

    def jobs(self) -> int:
        """Jobs on the RQ queue: one per enqueue_pr that queued a plan."""
        return int(self.queue.count)

    def meta(self, pr: str) -> PrMeta | None:
        return self.admission.read_meta(pr)

    def github(
        self,
        payload: Mapping[str, Any] | bytes,
        *,
        event: str = "pull_request",
        delivery: str | None = None,
        secret: str | None = SECRET,
        headers: Mapping[str, str | bytes] | None = None,
    ) -> httpx.Response:
        """A delivery as GitHub sends it: JSON body, signed unless `secret` is None."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        sent: dict[str, str | bytes] = {"Content-Type": "application/json", "X-GitHub-Event": event}
        if delivery != OMIT:
            sent["X-GitHub-Delivery"] = delivery or new_delivery()
        if secret is not None:
            sent["X-Hub-Signature-256"] = sign(secret.encode(), body)
        sent.update(headers or {})
        return self.http.post("/webhooks/github", content=body, headers=sent)

    def gitlab(
        self,
        payload: Mapping[str, Any] | bytes,
        *,
        delivery: str | None = None,
        token: str | None = TOKEN,
        headers: Mapping[str, str | bytes] | None = None,
    ) -> httpx.Response:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        sent: dict[str, str | bytes] = {
            "Content-Type": "application/json",
            "X-Gitlab-Event": "Merge Request Hook",
        }
        if delivery != OMIT:
            sent["Idempotency-Key"] = delivery or new_delivery()
        if token is not None:
            sent["X-Gitlab-Token"] = token
        sent.update(headers or {})
        return self.http.post("/webhooks/gitlab", content=body, headers=sent)


@contextmanager
def serve_hook(
    redis_url: str,
    queue_name: str,
    *,
    env: Mapping[str, str] = ENV,
    insecure_dev: bool = False,
    settings: Settings | None = None,
) -> Iterator[Hook]:
    settings = settings or Settings(redis_url=redis_url, queue_name=queue_name, webhook=OPEN)
    client = redis_client(settings.redis_url)  # as `reviewq serve` builds it
    app = create_app(settings, client, env=env, insecure_dev=insecure_dev)
    service = cast(WebhookService, app.state.webhook)
    with (
        serve_in_thread(app) as handle,
        httpx.Client(base_url=handle.url, timeout=10) as http,
    ):
        try:
            yield Hook(handle.url, http, service, service.admission.queue)
        finally:
            client.close()


def gh_pr(
    action: str = "opened",
    *,
    number: int = 7,
    sha: str = "a" * 40,
    owner: str = "octo",
    repo: str = "app",
    draft: bool = False,
) -> dict[str, Any]:
    """The parts of a `pull_request` event reviewq reads, plus some it must ignore."""
    return {
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "draft": draft,
            "state": "closed" if action == "closed" else "open",
            "head": {"sha": sha, "ref": "feature"},
            "base": {"ref": "main"},
        },
        "repository": {"name": repo, "full_name": f"{owner}/{repo}", "owner": {"login": owner}},
        "sender": {"login": "someone"},
    }


def gl_mr(
    action: str = "open",
    *,
    iid: int = 5,
    sha: str = "b" * 40,
    path: str = "group/sub/project",
    draft: bool = False,
    oldrev: str | None = None,
) -> dict[str, Any]:
    """The parts of a GitLab merge request event reviewq reads; `oldrev` marks an
    update as a push, as GitLab does."""
    state = {"close": "closed", "merge": "merged"}.get(action, "opened")
    attrs: dict[str, Any] = {
        "iid": iid,
        "action": action,
        "state": state,
        "draft": draft,
        "work_in_progress": draft,
        "last_commit": {"id": sha, "message": "change"},
    }
    if oldrev is not None:
        attrs["oldrev"] = oldrev
    return {
        "object_kind": "merge_request",
        "event_type": "merge_request",
        "project": {"id": 42, "path_with_namespace": path},
        "object_attributes": attrs,
    }
