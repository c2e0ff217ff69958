"""POST /webhooks/github over real HTTP against real Redis: every documented status.

Each delivery that must not act is also checked to have queued nothing, and each
redelivery to have queued nothing more.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlencode

import httpx
import pytest
import redis as redis_py
from webhook_support import SECRET, Hook, gh_pr, serve_hook

from scheduler import intake
from scheduler.config import Settings
from scheduler.config.webhook import WebhookSettings
from scheduler.sandbox.localredis import free_port
from scheduler.webhook import sign
from scheduler.webhook.deliveries import CLAIM_TTL_S

if TYPE_CHECKING:  # a type only: more than one test folder has a conftest module
    from conftest import LocalRedisFactory


@pytest.fixture
def hook(redis_url: str, unique: str) -> Iterator[Hook]:
    with serve_hook(redis_url, f"wh-{unique}") as served:
        yield served


def delivery() -> str:
    return str(uuid.uuid4())


def test_opened_is_enqueued_once_even_when_redelivered(hook: Hook) -> None:
    did = delivery()
    first = hook.github(gh_pr("opened", sha="1" * 40), delivery=did)
    assert first.status_code == 202, first.text
    assert first.json() == {
        "status": "enqueued",
        "detail": "queued for review at 111111111111",
        "pr": "octo/app#7",
    }
    for _ in range(2):
        again = hook.github(gh_pr("opened", sha="1" * 40), delivery=did)
        assert again.status_code == 200
        assert again.json()["status"] == "duplicate"
    assert hook.jobs() == 1
    meta = hook.meta("octo/app#7")
    assert meta is not None and meta.head_sha == "1" * 40 and meta.status == "planning"
    assert meta.ref["forge"] == "github" and meta.ref["number"] == 7


def test_same_head_under_a_new_delivery_id_is_not_queued_twice(hook: Hook) -> None:
    assert hook.github(gh_pr("opened"), delivery=delivery()).status_code == 202
    again = hook.github(gh_pr("synchronize"), delivery=delivery())
    assert again.status_code == 202 and again.json()["status"] == "already_queued"
    assert hook.jobs() == 1


@pytest.mark.parametrize("action", ["synchronize", "reopened", "ready_for_review"])
def test_new_heads_are_enqueued(hook: Hook, action: str) -> None:
    assert hook.github(gh_pr("opened", sha="1" * 40), delivery=delivery()).status_code == 202
    moved = hook.github(gh_pr(action, sha="2" * 40), delivery=delivery())
    assert moved.status_code == 202 and moved.json()["status"] == "enqueued"
    assert hook.jobs() == 2
    meta = hook.meta("octo/app#7")
    assert meta is not None and meta.head_sha == "2" * 40


def test_closed_cancels_the_pr(hook: Hook) -> None:
    hook.github(gh_pr("opened"), delivery=delivery())
    closed = hook.github(gh_pr("closed"), delivery=delivery())
    assert closed.status_code == 202
    assert closed.json()["status"] == "cancelled" and closed.json()["pr"] == "octo/app#7"
    meta = hook.meta("octo/app#7")
    assert meta is not None and meta.status == "cancelled"


def test_ping_answers_200(hook: Hook) -> None:
    response = hook.github({"zen": "Keep it logically awesome.", "hook_id": 1}, event="ping")
    assert response.status_code == 200 and response.json()["status"] == "pong"


@pytest.mark.parametrize(
    ("event", "payload", "reason"),
    [
        ("issues", {"action": "opened"}, "event 'issues' is not handled"),
        ("push", {"ref": "refs/heads/main"}, "event 'push' is not handled"),
        ("pull_request", gh_pr("labeled"), "action 'labeled' needs no review"),
        ("pull_request", gh_pr("opened", draft=True), "draft pull request"),
    ],
)
def test_other_events_are_acknowledged_and_ignored(
    hook: Hook, event: str, payload: dict[str, Any], reason: str
) -> None:
    response = hook.github(payload, event=event, delivery=delivery())
    assert response.status_code == 202
    assert response.json()["status"] == "ignored" and reason in response.json()["detail"]
    assert hook.jobs() == 0


def test_bad_and_missing_signatures_are_401_and_queue_nothing(hook: Hook) -> None:
    wrong = hook.github(gh_pr(), delivery=delivery(), secret="not-the-secret")
    missing = hook.github(gh_pr(), delivery=delivery(), secret=None)
    garbage = hook.github(gh_pr(), headers={"X-Hub-Signature-256": b"sha256=\xe9\xff"})
    sha1_only = hook.github(gh_pr(), secret=None, headers={"X-Hub-Signature": "sha1=00"})
    for response in (wrong, missing, garbage, sha1_only):
        assert response.status_code == 401
        assert response.json()["status"] == "bad_signature"
    assert "does not match" in wrong.json()["detail"]
    assert "missing" in missing.json()["detail"]
    assert SECRET not in wrong.text
    assert hook.jobs() == 0


def test_signature_covers_the_exact_bytes(hook: Hook) -> None:
    body = json.dumps(gh_pr()).encode()
    tampered = body.replace(b'"octo"', b'"evil"')
    response = hook.github(tampered, headers={"X-Hub-Signature-256": sign(SECRET.encode(), body)})
    assert response.status_code == 401
    assert hook.jobs() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),
    ],
)
def test_malformed_json_is_400(hook: Hook, body: bytes, field: str) -> None:
    response = hook.github(body, delivery=delivery())
    assert response.status_code == 400 and field in response.json()["detail"]
    assert hook.jobs() == 0


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("pull_request", "head", "sha"), None, "pull_request.head.sha is required"),
        (("pull_request", "head", "sha"), 12, "pull_request.head.sha must be a string"),
        (("pull_request", "head", "sha"), "f" * 65, "pull_request.head.sha: String should"),
        (("pull_request", "number"), True, "pull_request.number must be an integer"),
        (("pull_request", "number"), 0, "pull_request.number: Input should be greater"),
        (("repository", "owner"), None, "repository.owner.login is required"),
        (("repository", "name"), "a b", "repository.full_name: String should match"),
        (("pull_request", "draft"), "yes", "pull_request.draft must be a boolean"),
        (("action",), 3, "action must be a string"),
    ],
)
def test_missing_or_wrong_fields_are_400_naming_the_field(
    hook: Hook, path: tuple[str, ...], value: Any, field: str
) -> None:
    payload = gh_pr()
    node = payload
    for part in path[:-1]:
        node = node[part]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    response = hook.github(payload, delivery=delivery())
    assert response.status_code == 400, response.text
    assert field in response.json()["detail"]
    assert hook.jobs() == 0


def test_oversized_bodies_are_413_by_header_before_reading(hook: Hook) -> None:
    """Content-Length alone refuses it: the server answers without waiting for a byte."""
    port = int(hook.url.rsplit(":", 1)[1])
    request = (
        "POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-GitHub-Event: pull_request\r\nContent-Length: {10**9}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request.encode())
        reply = conn.recv(4096).decode("latin-1")
    assert reply.startswith("HTTP/1.1 413"), reply
    assert "max_body_bytes" in reply
    assert hook.jobs() == 0


def test_oversized_bodies_are_413_when_counted(redis_url: str, unique: str) -> None:
    """Sent chunked (no Content-Length), the bytes are counted as they arrive."""
    settings = Settings(
        redis_url=redis_url,
        queue_name=f"wh-{unique}",
        webhook=WebhookSettings(max_body_bytes=4096, repositories=("*",)),
    )
    body = json.dumps({**gh_pr(), "pad": "x" * 5000}).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 500):
            yield body[start : start + 500]

    with serve_hook(redis_url, settings.queue_name, settings=settings) as small:
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": "pull_request",
            "X-Hub-Signature-256": sign(SECRET.encode(), body),
        }
        streamed = small.http.post("/webhooks/github", content=chunks(), headers=headers)
        assert streamed.status_code == 413 and "4096 bytes" in streamed.json()["detail"]
        fits = small.github(gh_pr(), delivery=delivery())
        assert fits.status_code == 202
        assert small.jobs() == 1


def test_wrong_content_type_is_415_and_says_to_choose_json(hook: Hook) -> None:
    for kind in ("text/plain", "application/xml", ""):
        response = hook.github(gh_pr(), delivery=delivery(), headers={"Content-Type": kind})
        assert response.status_code == 415
        assert "choose application/json" in response.json()["detail"]
    assert hook.jobs() == 0


def test_form_encoded_deliveries_are_accepted(hook: Hook) -> None:
    body = urlencode({"payload": json.dumps(gh_pr())}).encode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Hub-Signature-256": sign(SECRET.encode(), body),
    }
    response = hook.github(body, delivery=delivery(), secret=None, headers=headers)
    assert response.status_code == 202 and response.json()["status"] == "enqueued"
    assert hook.jobs() == 1


@pytest.mark.parametrize(
    "name", ["run_txn", "enqueue_plan"], ids=["before-any-write", "mid-transaction"]
)
def test_a_failed_enqueue_leaves_the_delivery_open_for_redelivery(
    hook: Hook, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """Redis fails once: as enqueue_pr's transaction starts, or while the transaction
    that registers the PR and queues its plan is being built (nothing of it may land)."""
    did = delivery()
    real = getattr(intake, name)

    def flaky(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(intake, name, real)
        raise redis_py.ConnectionError("Redis went away mid-request")

    monkeypatch.setattr(intake, name, flaky)
    failed = hook.github(gh_pr(), delivery=did)
    assert failed.status_code == 503 and failed.headers["Retry-After"] == "5"
    assert hook.jobs() == 0 and hook.meta("octo/app#7") is None
    retried = hook.github(gh_pr(), delivery=did)
    assert retried.status_code == 202 and retried.json()["status"] == "enqueued"
    assert hook.github(gh_pr(), delivery=did).json()["status"] == "duplicate"
    assert hook.jobs() == 1


def test_a_delivery_being_processed_is_409_not_acknowledged(hook: Hook) -> None:
    did = delivery()
    deliveries = hook.service.deliveries
    assert deliveries.claim(deliveries.key("github", did)) == "new"
    response = hook.github(gh_pr(), delivery=did)
    assert response.status_code == 409 and response.json()["status"] == "in_progress"
    assert hook.jobs() == 0


def test_without_a_secret_github_is_off_unless_insecure_dev(redis_url: str, unique: str) -> None:
    with serve_hook(redis_url, f"wh-{unique}", env={}) as off:
        refused = off.github(gh_pr(), secret=None)
        assert refused.status_code == 403 and "GITHUB_WEBHOOK_SECRET" in refused.text
        assert off.jobs() == 0
    with serve_hook(redis_url, f"wh-{unique}", env={}, insecure_dev=True) as dev:
        assert dev.github(gh_pr(), secret=None).status_code == 202
        assert dev.jobs() == 1


def test_redis_down_is_503_with_a_clear_message(unique: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}"  # nothing listens there
    with serve_hook(url, f"wh-{unique}") as down:
        response = down.github(gh_pr(), delivery=delivery())
        assert response.status_code == 503
        assert response.json()["status"] == "redis_unavailable"
        assert "deliver again later" in response.json()["detail"]
        assert down.github(gh_pr(), secret="wrong").status_code == 401  # checked first


def test_other_methods_and_paths_are_not_5xx(hook: Hook) -> None:
    assert hook.http.get("/webhooks/github").status_code == 405
    assert hook.http.post("/webhooks/bitbucket", content=b"{}").status_code == 404
    assert isinstance(hook.http, httpx.Client)


@pytest.mark.parametrize("set_nx_get", [True, False], ids=["redis7", "before-redis7"])
def test_claims_are_new_then_pending_then_done(hook: Hook, set_nx_get: bool) -> None:
    """Both ways of claiming (SET NX GET, and MULTI for servers before 7.0) agree."""
    deliveries = hook.service.deliveries
    deliveries._set_nx_get = set_nx_get
    key = deliveries.key("github", delivery())
    assert deliveries.claim(key) == "new"
    assert deliveries.claim(key) == "pending"
    deliveries.confirm(key)
    assert deliveries.claim(key) == "done"
    assert 0 < hook.service.redis.ttl(key) <= hook.service.settings.webhook.dedupe_ttl_s
    did = delivery()
    assert hook.github(gh_pr(), delivery=did).json()["status"] == "enqueued"
    assert hook.github(gh_pr(), delivery=did).json()["status"] == "duplicate"


def test_the_first_delivery_after_a_redis_restart_is_taken(
    local_redis_factory: LocalRedisFactory, unique: str
) -> None:
    """Redis restarted while no delivery came: the next one meets the app's closed
    connection and must still be enqueued (a 503 is a PR GitHub never redelivers)."""
    server = local_redis_factory()
    with serve_hook(server.url, f"wh-{unique}") as hook:
        assert hook.github(gh_pr(number=1), delivery=delivery()).status_code == 202
        server.kill()
        server.start()
        assert hook.github(gh_pr(number=2), delivery=delivery()).status_code == 202


def test_deliveries_recover_after_redis_restarts(
    local_redis_factory: LocalRedisFactory, unique: str
) -> None:
    """The app's single connection reconnects by itself: no restart of reviewq serve."""
    server = local_redis_factory()
    with serve_hook(server.url, f"wh-{unique}") as hook:
        assert hook.github(gh_pr(number=1), delivery=delivery()).status_code == 202
        server.kill()
        down = hook.github(gh_pr(number=2), delivery=delivery())
        assert down.status_code == 503
        server.restart()
        statuses = [hook.github(gh_pr(number=n), delivery=delivery()).status_code for n in (3, 4)]
        assert statuses[-1] == 202 and set(statuses) <= {202, 503}
        assert hook.http.get("/healthz").status_code == 200


def test_claim_at_claims_like_claim_and_reads_redis_time(hook: Hook) -> None:
    """The webhook's claim (a script that also reads TIME) agrees with `claim`."""
    deliveries = hook.service.deliveries
    key = deliveries.key("github", delivery())
    before = hook.admission.now_ms()
    claim, now_ms = deliveries.claim_at(key)
    assert claim == "new" and before <= now_ms <= hook.admission.now_ms()
    assert deliveries.claim_at(key)[0] == "pending" == deliveries.claim(key)
    assert 0 < cast(int, hook.admission.redis.ttl(key)) <= CLAIM_TTL_S
    deliveries.confirm(key)
    assert deliveries.claim_at(key)[0] == "done" == deliveries.claim(key)
