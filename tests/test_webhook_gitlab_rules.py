"""GitLab's merge request rules one by one, on real deliveries (tests/fixtures/webhooks).

GitLab sends one `update` action for a push, a label, a title and a draft toggle, so
`scheduler/webhook/gitlab.py` tells them apart by the MR's state, `oldrev`, and the
`changes` object. test_webhook_lifecycle.py checks whole sequences over HTTP and
Redis; here each rule is checked alone and its answer compared whole (the reason, the
PR, the `unchanged` text), which is what the mutants that survived
`scripts/mutation.py` needed (docs/testing.md, "Mutation testing"). Where a test
rewrites a fixture, `gitlab_fixture`'s arguments name the fields it changed.
"""

from __future__ import annotations

from typing import Any

import pytest
from webhook_fixtures import gitlab_fixture

from scheduler.webhook.events import BadPayload, Cancel, Enqueue, Ignore
from scheduler.webhook.gitlab import _from_fork, gitlab_action

MR = "demoaccount2-commits-group/test_ci_tmp!3"  # the woodpecker fixtures' edited MR
UNCHANGED = (
    "merge request update without new commits ({} changed): the head is reviewed "
    "already or queued, so there is nothing new to review"
)
DRAFT_WAITS = Ignore("draft merge request: it is reviewed once marked ready")
OLDREV = "8b641937b7340066d882b9d8a8cc5b0573a207de"


def toggle(form: str, to_draft: bool, title: str = "Edit README") -> dict[str, Any]:
    """`changes` for a draft toggle: `draft` (GitLab 16.2+), `work_in_progress` (older)
    or only the title's `Draft:` prefix (older still)."""
    if form == "title":
        plain, drafted = title, f"Draft: {title}"
        before, after = (plain, drafted) if to_draft else (drafted, plain)
        return {"title": {"previous": before, "current": after}}
    return {form: {"previous": not to_draft, "current": to_draft}}


# --- state: only an open MR is reviewed -----------------------------------------------


@pytest.mark.parametrize("state", ["closed", "merged", "locked"])
@pytest.mark.parametrize("name", ["LabelsAdded", "Edited", "Updated"])
def test_an_event_on_a_merge_request_that_is_not_open_is_ignored(name: str, state: str) -> None:
    got = gitlab_action(gitlab_fixture(name, state=state), "d")
    assert got == Ignore(f"the merge request is {state}: only open ones are reviewed")


def test_a_long_state_is_cut_in_the_reason() -> None:
    got = gitlab_action(gitlab_fixture("Edited", state="x" * 100), "d")
    assert got == Ignore(f"the merge request is {'x' * 60}: only open ones are reviewed")


@pytest.mark.parametrize("state", [None, 2, ["opened"]])
def test_a_state_that_is_absent_or_not_text_is_no_state(state: object) -> None:
    """Older GitLab sends no `state`; a state of another type is treated the same,
    as `_text` documents, rather than refused or cut like a string."""
    data = gitlab_fixture("Updated")
    data["object_attributes"]["state"] = state  # the one field changed
    got = gitlab_action(data, "d")
    assert isinstance(got, Enqueue) and got.unchanged is None


# --- a push is told by oldrev ----------------------------------------------------------


def test_an_update_with_oldrev_is_a_push() -> None:
    got = gitlab_action(gitlab_fixture("Updated"), "d")  # the fixture carries oldrev
    assert isinstance(got, Enqueue) and got.unchanged is None
    assert got.ref.head_sha == gitlab_fixture("Updated")["object_attributes"]["last_commit"]["id"]


@pytest.mark.parametrize("oldrev", [None, "", 0, {"sha": OLDREV}])
def test_an_update_whose_oldrev_is_absent_or_not_text_changed_no_code(oldrev: object) -> None:
    data = gitlab_fixture("Updated")
    data["object_attributes"]["oldrev"] = oldrev  # the one field changed
    got = gitlab_action(data, "d")
    assert isinstance(got, Enqueue)
    assert got.unchanged == UNCHANGED.format("no code")


@pytest.mark.parametrize("name", ["Opened", "Reopened"])
def test_open_and_reopen_are_never_unchanged(name: str) -> None:
    got = gitlab_action(gitlab_fixture(name), "d")
    assert isinstance(got, Enqueue) and got.unchanged is None


# --- the unchanged reason names what was edited ----------------------------------------


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("LabelsAdded", "labels"),
        ("LabelsUpdated", "labels"),
        ("Assigned", "assignees"),
        ("Milestoned", "milestone_id"),
        ("Edited", "title, description"),  # in _NOT_CODE's order, not the payload's
        ("WithoutChanges", "no code"),
    ],
)
def test_an_update_without_commits_says_what_changed(name: str, named: str) -> None:
    got = gitlab_action(gitlab_fixture(name), "d")
    assert isinstance(got, Enqueue) and got.ref.id.endswith(f"!{got.ref.number}")
    assert got.unchanged == UNCHANGED.format(named)


@pytest.mark.parametrize("changes", [None, [], "labels", 3])
def test_a_malformed_changes_is_ignored_not_refused(changes: object) -> None:
    data = gitlab_fixture("LabelsAdded")
    data["changes"] = changes  # the one field changed
    got = gitlab_action(data, "d")
    assert isinstance(got, Enqueue) and got.unchanged == UNCHANGED.format("no code")


def test_every_edit_that_is_not_code_is_named() -> None:
    edits = ["labels", "assignees", "reviewers", "milestone_id", "title", "description"]
    changes = {key: {"previous": None, "current": None} for key in reversed(edits)}
    got = gitlab_action(gitlab_fixture("Edited", changes=changes | {"updated_at": {}}), "d")
    assert isinstance(got, Enqueue) and got.unchanged == UNCHANGED.format(", ".join(edits))


# --- draft toggles ---------------------------------------------------------------------


@pytest.mark.parametrize("form", ["draft", "work_in_progress", "title"])
def test_turning_draft_cancels(form: str) -> None:
    data = gitlab_fixture("Edited", draft=True, changes=toggle(form, to_draft=True))
    assert gitlab_action(data, "d") == Cancel(MR, "converted to draft")


@pytest.mark.parametrize("form", ["draft", "work_in_progress", "title"])
def test_marking_ready_queues_the_head_as_new(form: str) -> None:
    """Ready is not "unchanged": the head was cancelled when it turned draft, so it is
    queued whether or not reviewq finished it before."""
    data = gitlab_fixture("Edited", draft=False, changes=toggle(form, to_draft=False))
    got = gitlab_action(data, "d")
    assert isinstance(got, Enqueue) and got.ref.id == MR and got.unchanged is None


@pytest.mark.parametrize("form", ["draft", "work_in_progress"])
@pytest.mark.parametrize("value", [True, False])
def test_a_stale_change_entry_is_no_toggle(form: str, value: bool) -> None:
    """GitLab has sent `changes` entries whose previous equals current: no toggle."""
    changes = {form: {"previous": value, "current": value}}
    got = gitlab_action(gitlab_fixture("Edited", draft=value, changes=changes), "d")
    if value:
        assert got == DRAFT_WAITS
    else:
        assert isinstance(got, Enqueue) and got.unchanged == UNCHANGED.format("no code")


@pytest.mark.parametrize(
    "change",
    [
        {"current": "yes"},
        {"previous": False},
        {"previous": False, "current": None},
        "true",
        None,
    ],
)
def test_a_draft_change_that_is_not_a_boolean_pair_is_no_toggle(change: object) -> None:
    got = gitlab_action(gitlab_fixture("Edited", draft=True, changes={"draft": change}), "d")
    assert got == DRAFT_WAITS


@pytest.mark.parametrize(
    "title",
    [
        {"previous": "Draft: x", "current": None},
        {"previous": None, "current": "Draft: x"},
        {"current": "Draft: x"},
        {"previous": "Draft: x", "current": "Draft: y"},
        {"previous": "x", "current": "y"},
        "Draft: x",
    ],
)
def test_a_title_change_that_toggles_nothing_is_no_toggle(title: object) -> None:
    got = gitlab_action(gitlab_fixture("Edited", draft=False, changes={"title": title}), "d")
    assert isinstance(got, Enqueue) and got.unchanged == UNCHANGED.format("title")


@pytest.mark.parametrize(
    "drafted", ["Draft: x", "draft:x", "  [Draft] x", "(WIP) x", "WIP: x", "[wip] x", "Draft x"]
)
def test_gitlabs_draft_title_forms(drafted: str) -> None:
    changes = {"title": {"previous": "x", "current": drafted}}
    got = gitlab_action(gitlab_fixture("Edited", draft=True, changes=changes), "d")
    assert got == Cancel(MR, "converted to draft")


def test_the_draft_key_is_read_before_the_title() -> None:
    """Both changed: the flag, which GitLab sets itself, decides over a title edit."""
    changes = toggle("draft", to_draft=True) | {"title": {"previous": "Draft: x", "current": "x"}}
    got = gitlab_action(gitlab_fixture("Edited", draft=True, changes=changes), "d")
    assert got == Cancel(MR, "converted to draft")


@pytest.mark.parametrize("name", ["LabelsAdded", "Updated", "Opened"])
def test_a_draft_without_a_toggle_waits(name: str) -> None:
    assert gitlab_action(gitlab_fixture(name, draft=True), "d") == DRAFT_WAITS


# --- errors name the payload key each ref field came from ------------------------------


@pytest.mark.parametrize(
    ("rewrite", "key"),
    [
        ({"project": "grp/bad name"}, r"project\.path_with_namespace"),  # the repo part
        ({"project": "bad owner/proj"}, r"project\.path_with_namespace"),  # the owner part
        ({"project": "grp/pro|j"}, r"project\.path_with_namespace"),  # the id
        ({"iid": 0}, r"object_attributes\.iid"),
        ({"sha": "not-a-sha"}, r"object_attributes\.last_commit\.id"),
    ],
)
def test_a_bad_value_names_its_payload_key(rewrite: dict[str, Any], key: str) -> None:
    with pytest.raises(BadPayload, match=rf"^{key}: "):
        gitlab_action(gitlab_fixture("Opened", **rewrite), "d")


def test_a_gitlab_event_without_its_attributes_is_not_from_a_fork() -> None:
    """The fork rule reads both project ids of `object_attributes`; with none there is no
    fork to refuse (the event's own checks reject the payload)."""
    assert _from_fork({}) is False
    assert _from_fork({"object_attributes": []}) is False
    attrs = {"source_project_id": 1, "target_project_id": 2}
    assert _from_fork({"object_attributes": attrs}) is True
    assert _from_fork({"object_attributes": {**attrs, "source_project_id": 2}}) is False
