"""POST /webhooks/gitlab over real HTTP against real Redis: merge request events."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from webhook_support import TOKEN, Hook, gl_mr, serve_hook


@pytest.fixture
def hook(redis_url: str, unique: str) -> Iterator[Hook]:
    with serve_hook(redis_url, f"gl-{unique}") as served:
        yield served


def delivery() -> str:
    return str(uuid.uuid4())


def test_open_is_enqueued_once_even_when_redelivered(hook: Hook) -> None:
    did = delivery()
    first = hook.gitlab(gl_mr("open", sha="c" * 40), delivery=did)
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "enqueued" and first.json()["pr"] == "group/sub/project!5"
    again = hook.gitlab(gl_mr("open", sha="c" * 40), delivery=did)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert hook.jobs() == 1
    meta = hook.meta("group/sub/project!5")
    assert meta is not None and meta.head_sha == "c" * 40
    assert meta.ref == {
        "id": "group/sub/project!5",
        "head_sha": "c" * 40,
        "forge": "gitlab",
        "owner": "group/sub",
        "repo": "project",
        "number": 5,
    }


def test_event_uuid_dedupes_when_there_is_no_idempotency_key(hook: Hook) -> None:
    headers = {"X-Gitlab-Event-UUID": delivery()}
    assert hook.gitlab(gl_mr(), headers=headers).json()["status"] == "enqueued"
    assert hook.gitlab(gl_mr(), headers=headers).json()["status"] == "duplicate"
    assert hook.jobs() == 1


def test_update_with_the_same_head_is_not_queued_again(hook: Hook) -> None:
    hook.gitlab(gl_mr("open"), delivery=delivery())
    title_edit = hook.gitlab(gl_mr("update"), delivery=delivery())
    assert title_edit.status_code == 202 and title_edit.json()["status"] == "ignored"
    push = hook.gitlab(gl_mr("update", sha="d" * 40, oldrev="b" * 40), delivery=delivery())
    assert push.json()["status"] == "enqueued"
    reopened = hook.gitlab(gl_mr("reopen", sha="e" * 40), delivery=delivery())
    assert reopened.json()["status"] == "enqueued"
    assert hook.jobs() == 3


@pytest.mark.parametrize(("action", "reason"), [("close", "closed"), ("merge", "merged")])
def test_close_and_merge_cancel(hook: Hook, action: str, reason: str) -> None:
    hook.gitlab(gl_mr("open"), delivery=delivery())
    response = hook.gitlab(gl_mr(action), delivery=delivery())
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert response.json()["detail"].startswith(reason)
    meta = hook.meta("group/sub/project!5")
    assert meta is not None and meta.status == "cancelled"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"object_kind": "note"}, "object_kind 'note' is not handled"),
        ({"object_kind": "push"}, "object_kind 'push' is not handled"),
        (gl_mr("approved"), "action 'approved' needs no review"),
        (gl_mr("open", draft=True), "draft merge request"),
    ],
)
def test_other_events_are_acknowledged_and_ignored(
    hook: Hook, payload: dict[str, Any], reason: str
) -> None:
    response = hook.gitlab(payload, delivery=delivery())
    assert response.status_code == 202
    assert response.json()["status"] == "ignored" and reason in response.json()["detail"]
    assert hook.jobs() == 0


def test_work_in_progress_alone_marks_a_draft(hook: Hook) -> None:
    payload = gl_mr()
    payload["object_attributes"] = {**payload["object_attributes"], "draft": None}
    payload["object_attributes"]["work_in_progress"] = True
    assert hook.gitlab(payload).json()["status"] == "ignored"


def test_bad_and_missing_tokens_are_401(hook: Hook) -> None:
    wrong = hook.gitlab(gl_mr(), token="nope")
    missing = hook.gitlab(gl_mr(), token=None)
    for response in (wrong, missing):
        assert response.status_code == 401 and response.json()["status"] == "bad_signature"
        assert TOKEN not in response.text
    assert "missing" in missing.json()["detail"]
    assert hook.jobs() == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"last_commit": None}, "object_attributes.last_commit.id is required"),
        ({"iid": "5"}, "object_attributes.iid must be an integer"),
        ({"action": None}, "object_attributes.action is required"),
    ],
)
def test_missing_fields_are_400_naming_them(hook: Hook, change: dict[str, Any], field: str) -> None:
    payload = gl_mr()
    attrs = payload["object_attributes"]
    for key, value in change.items():
        if value is None:
            del attrs[key]
        else:
            attrs[key] = value
    response = hook.gitlab(payload, delivery=delivery())
    assert response.status_code == 400 and field in response.json()["detail"]
    assert hook.jobs() == 0


def test_malformed_json_and_wrong_content_type(hook: Hook) -> None:
    assert hook.gitlab(b"{oops").status_code == 400
    form = hook.gitlab(gl_mr(), headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    assert hook.jobs() == 0


def test_without_a_token_gitlab_is_off(redis_url: str, unique: str) -> None:
    env = {"GITHUB_WEBHOOK_SECRET": "only-github-is-configured"}
    with serve_hook(redis_url, f"gl-{unique}", env=env) as off:
        response = off.gitlab(gl_mr(), token=None)
        assert response.status_code == 403 and "GITLAB_WEBHOOK_TOKEN" in response.text
        assert off.jobs() == 0
