"""A PR's life through the webhook, on real payloads written by others.

The three gaps that sending real deliveries to a live `reviewq serve` found (issue
15): a GitLab edit of a closed MR queued it again; close/reopen cycles stacked copies
of one plan job on the RQ queue; a PR turned draft kept its queued review. Then one
sequence per forge: open, push, label edit, close, edit while closed, reopen, convert
to draft, ready. Every delivery goes over real HTTP to the served app and real Redis.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from webhook_fixtures import (
    github_fixture,
    github_fixture_actions,
    gitlab_fixture,
    gitlab_fixture_names,
)
from webhook_support import Hook, serve_hook

from scheduler.webhook.events import Cancel, Enqueue, Ignore
from scheduler.webhook.github import github_action
from scheduler.webhook.gitlab import gitlab_action

MR = "demoaccount2-commits-group/test_ci_tmp!3"
MR_PROJECT, MR_IID = "demoaccount2-commits-group/test_ci_tmp", 3
A, B = "2f7670508b771e7e77839402be8b34b13787aba8", "b" * 40
PR = "Codertocat/Hello-World#2"
GH_A = "ec26c3e57ca3a959ca5aad62de7213c562f8c821"


@pytest.fixture
def hook(redis_url: str, unique: str) -> Iterator[Hook]:
    with serve_hook(redis_url, f"lc-{unique}") as served:
        yield served


def gl(hook: Hook, name: str, **changes: Any) -> httpx.Response:
    """One GitLab fixture, as the sequence's MR unless told otherwise."""
    changes.setdefault("project", MR_PROJECT)
    changes.setdefault("iid", MR_IID)
    return hook.gitlab(gitlab_fixture(name, **changes), delivery=str(uuid.uuid4()))


def gh(hook: Hook, action: str, **changes: Any) -> httpx.Response:
    return hook.github(github_fixture(action, **changes), delivery=str(uuid.uuid4()))


def outcome(response: httpx.Response) -> str:
    assert response.status_code in (200, 202), response.text
    return str(response.json()["status"])


def queued_ids(hook: Hook) -> list[str]:
    return list(hook.queue.get_job_ids())


def draft_toggle(to_draft: bool, form: str = "draft") -> dict[str, Any]:
    """`changes` as GitLab sends them for a draft toggle: `draft` (GitLab 16.2+),
    `work_in_progress` (older), or only the title's `Draft:` prefix (older still)."""
    title = {"previous": "Draft: add x", "current": "add x"}
    if to_draft:
        title = {"previous": title["current"], "current": title["previous"]}
    if form == "title":
        return {"title": title}
    return {form: {"previous": not to_draft, "current": to_draft}}


# --- every fixture, read as the parser reads it --------------------------------------


@pytest.mark.parametrize("name", gitlab_fixture_names())
def test_each_gitlab_fixture_means_what_its_name_says(name: str) -> None:
    action = gitlab_action(gitlab_fixture(name), "d")
    expected: dict[str, type] = {
        "Opened": Enqueue,
        "Reopened": Enqueue,
        "Updated": Enqueue,  # it carries oldrev: commits were pushed
        "Closed": Cancel,
        "Merged": Cancel,
        "Approved": Ignore,
    }
    if name in expected:
        assert isinstance(action, expected[name]), action
        if isinstance(action, Enqueue):
            assert action.unchanged is None
    else:  # labels, assignees, milestones, title, nothing: no code changed
        assert isinstance(action, Enqueue) and action.unchanged is not None, action
        assert "without new commits" in action.unchanged


@pytest.mark.parametrize("action", github_fixture_actions())
def test_each_github_fixture_means_what_its_name_says(action: str) -> None:
    parsed = github_action("pull_request", github_fixture(action), "d")
    if action in ("opened", "synchronize", "reopened", "ready_for_review"):
        assert isinstance(parsed, Enqueue) and parsed.ref.id == PR
    elif action in ("closed", "converted_to_draft"):
        assert isinstance(parsed, Cancel) and parsed.pr == PR
    else:
        assert isinstance(parsed, Ignore) and "needs no review" in parsed.reason


def test_go_gitlabs_open_event_is_queued() -> None:
    parsed = gitlab_action(gitlab_fixture("go-gitlab"), "d")
    assert isinstance(parsed, Enqueue) and parsed.ref.id == "gitlabhq/gitlab-test!1"


# --- 1. an edit of a closed MR, and edits that change no code ------------------------


def test_an_edit_of_a_closed_merge_request_queues_nothing(hook: Hook) -> None:
    assert outcome(gl(hook, "Opened")) == "enqueued"
    assert outcome(gl(hook, "Closed", sha=A)) == "cancelled"
    edit = gl(hook, "LabelsAdded", state="closed")
    assert outcome(edit) == "ignored" and "is closed" in edit.json()["detail"]
    meta = hook.meta(MR)
    assert meta is not None and meta.status == "cancelled"
    assert queued_ids(hook) == queued_ids(hook)[:1]  # the one plan job from the open


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("LabelsAdded", "labels"),
        ("LabelsUpdated", "labels"),
        ("Assigned", "assignees"),
        ("Milestoned", "milestone_id"),
        ("Edited", "title"),
        ("WithoutChanges", "no code"),
    ],
)
def test_edits_without_new_commits_are_ignored_with_a_reason(
    hook: Hook, name: str, named: str
) -> None:
    assert outcome(gl(hook, "Opened")) == "enqueued"
    edit = gl(hook, name)
    assert outcome(edit) == "ignored", edit.text
    assert named in edit.json()["detail"] and edit.json()["pr"] == MR
    assert hook.jobs() == 1


def test_a_push_is_told_by_oldrev_and_a_missed_one_by_last_commit(hook: Hook) -> None:
    assert outcome(gl(hook, "Opened")) == "enqueued"
    assert outcome(gl(hook, "Updated", sha=B, oldrev=A)) == "enqueued"  # a push: oldrev
    hook.admission.cancel(MR, "cancelled by an operator")  # B's review ended
    assert outcome(gl(hook, "WithoutChanges", sha=B)) == "ignored"  # nothing moved
    moved = gl(hook, "WithoutChanges", sha="c" * 40)  # a push whose delivery was lost
    assert outcome(moved) == "enqueued"
    meta = hook.meta(MR)
    assert meta is not None and meta.head_sha == "c" * 40 and meta.status == "planning"


# --- 2. close and reopen cycles keep one plan job ------------------------------------


def test_close_and_reopen_cycles_keep_one_plan_job_per_head(hook: Hook) -> None:
    assert outcome(gl(hook, "Opened")) == "enqueued"
    for n in range(2):
        assert outcome(gl(hook, "Closed", sha=A, updated_at=f"c{n}")) == "cancelled"
        assert outcome(gl(hook, "Reopened", sha=A, updated_at=f"r{n}")) == "enqueued"
    assert outcome(gh(hook, "opened")) == "enqueued"
    for n in range(2):
        assert outcome(gh(hook, "closed", updated_at=f"c{n}")) == "cancelled"
        assert outcome(gh(hook, "reopened", updated_at=f"r{n}")) == "enqueued"
    ids = queued_ids(hook)
    assert len(ids) == 2 and len(set(ids)) == 2, ids  # one plan job per PR head


# --- 3. drafts wait until they are ready ---------------------------------------------


def _with_messages(hook: Hook, pr: str, sha: str) -> None:
    """The plan landed: three messages, two dispatched, one waiting in the backlog."""
    hook.admission.submit(pr, sha, ["m0", "m1", "m2"], files=3, plan={})


@pytest.mark.parametrize("form", ["draft", "work_in_progress", "title"])
def test_a_merge_request_turned_draft_cancels_its_work_until_ready(hook: Hook, form: str) -> None:
    assert outcome(gl(hook, "Opened")) == "enqueued"
    _with_messages(hook, MR, A)
    drafted = gl(hook, "Edited", draft=True, changes=draft_toggle(True, form))
    assert outcome(drafted) == "cancelled" and "converted to draft" in drafted.json()["detail"]
    assert "3 unstarted" in drafted.json()["detail"]
    meta = hook.meta(MR)
    assert meta is not None and meta.status == "cancelled"
    assert outcome(gl(hook, "LabelsAdded", draft=True)) == "ignored"  # still a draft
    ready = gl(hook, "Edited", draft=False, changes=draft_toggle(False, form))
    assert outcome(ready) == "enqueued"
    meta = hook.meta(MR)
    assert meta is not None and meta.status == "planning" and meta.head_sha == A


def test_a_pull_request_turned_draft_cancels_its_work_until_ready(hook: Hook) -> None:
    assert outcome(gh(hook, "opened")) == "enqueued"
    _with_messages(hook, PR, GH_A)
    drafted = gh(hook, "converted_to_draft")
    assert outcome(drafted) == "cancelled" and "3 unstarted" in drafted.json()["detail"]
    assert outcome(gh(hook, "ready_for_review")) == "enqueued"
    meta = hook.meta(PR)
    assert meta is not None and meta.status == "planning"


# --- the whole life, once per forge --------------------------------------------------


def test_a_merge_requests_life_on_gitlab(hook: Hook) -> None:
    steps = [
        ("open", gl(hook, "Opened"), "enqueued"),
        ("push", gl(hook, "Updated", sha=B, oldrev=A), "enqueued"),
        ("label edit", gl(hook, "LabelsAdded", sha=B), "ignored"),
        ("close", gl(hook, "Closed", sha=B), "cancelled"),
        ("edit while closed", gl(hook, "Edited", sha=B, state="closed"), "ignored"),
        ("reopen", gl(hook, "Reopened", sha=B), "enqueued"),
        (
            "to draft",
            gl(hook, "Edited", sha=B, draft=True, changes=draft_toggle(True)),
            "cancelled",
        ),
        ("ready", gl(hook, "Edited", sha=B, draft=False, changes=draft_toggle(False)), "enqueued"),
    ]
    assert [(step, outcome(r)) for step, r, _ in steps] == [(s, o) for s, _, o in steps]
    meta = hook.meta(MR)
    assert meta is not None and meta.head_sha == B and meta.status == "planning"
    assert max(Counter(queued_ids(hook)).values()) == 1  # no plan job queued twice
    assert len(queued_ids(hook)) == 2  # A's (superseded: a no-op when it runs) and B's


def test_a_pull_requests_life_on_github(hook: Hook) -> None:
    b = "b" * 40
    steps = [
        ("open", gh(hook, "opened"), "enqueued"),
        ("push", gh(hook, "synchronize", sha=b), "enqueued"),
        ("label edit", gh(hook, "labeled", sha=b), "ignored"),
        ("close", gh(hook, "closed", sha=b), "cancelled"),
        ("edit while closed", gh(hook, "labeled", sha=b, state="closed"), "ignored"),
        ("reopen", gh(hook, "reopened", sha=b), "enqueued"),
        ("to draft", gh(hook, "converted_to_draft", sha=b), "cancelled"),
        ("ready", gh(hook, "ready_for_review", sha=b), "enqueued"),
    ]
    assert [(step, outcome(r)) for step, r, _ in steps] == [(s, o) for s, _, o in steps]
    meta = hook.meta(PR)
    assert meta is not None and meta.head_sha == b and meta.status == "planning"
    assert max(Counter(queued_ids(hook)).values()) == 1
    assert len(queued_ids(hook)) == 2
