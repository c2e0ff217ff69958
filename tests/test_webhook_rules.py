"""The webhook's signature and event rules, one by one, with values fixed by hand.

Written to kill the mutants that survived `scripts/mutation.py` in
`scheduler/webhook/github.py`, `gitlab.py` and `events.py` (docs/testing.md): a
signature computed by the same `sign` the check uses cannot catch a wrong prefix, so
GitHub's own published example is the oracle here; and what an event asks for (the
cancel reason, the job's source, the fork flag) is compared whole.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from webhook_fixtures import github_fixture

from scheduler.webhook.events import BadPayload, Cancel, Enqueue, Ignore, flag, pr_id
from scheduler.webhook.github import github_action, sign, signature_ok
from scheduler.webhook.gitlab import gitlab_action, token_ok

# GitHub's documented example ("Validating webhook deliveries"): this secret and body
# give exactly this header.
GITHUB_SECRET = b"It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_HEADER = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_sign_matches_githubs_published_example() -> None:
    assert sign(GITHUB_SECRET, GITHUB_BODY) == GITHUB_HEADER
    assert signature_ok(GITHUB_SECRET, GITHUB_BODY, GITHUB_HEADER)


@pytest.mark.parametrize(
    "header",
    [None, "", GITHUB_HEADER.upper(), GITHUB_HEADER[7:], GITHUB_HEADER + "0", "sha256=é"],
)
def test_signature_ok_refuses_anything_but_the_exact_header(header: str | None) -> None:
    assert not signature_ok(GITHUB_SECRET, GITHUB_BODY, header)


def test_token_ok_is_the_exact_token() -> None:
    assert token_ok(b"s3cret", "s3cret")
    for header in (None, "", "S3CRET", "s3cret ", "s3cre", "é"):
        assert not token_ok(b"s3cret", header), header


def github_pr(**pr: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "action": "opened",
        "pull_request": {"number": 7, "draft": False, "head": {"sha": "a" * 40}},
        "repository": {"name": "repo", "owner": {"login": "octo"}},
    }
    data["pull_request"].update(pr)
    return data


def test_github_ping_and_other_events_are_ignored() -> None:
    assert github_action("ping", {}, None) == Ignore("pong", ping=True)
    ignored = github_action("issues", github_pr(), None)
    assert isinstance(ignored, Ignore) and not ignored.ping and "'issues'" in ignored.reason


@pytest.mark.parametrize(
    ("action", "reason"), [("closed", "closed"), ("converted_to_draft", "converted to draft")]
)
def test_github_cancel_names_its_reason(action: str, reason: str) -> None:
    data = github_pr()
    data["action"] = action
    assert github_action("pull_request", data, "d1") == Cancel("octo/repo#7", reason)


def test_github_enqueue_carries_its_source_and_gate_facts() -> None:
    data = github_pr(author_association="MEMBER")
    got = github_action("pull_request", data, "d1")
    assert isinstance(got, Enqueue)
    assert got.source == {"kind": "github", "delivery": "d1"}
    assert (got.repo, got.association, got.fork) == ("octo/repo", "MEMBER", False)
    assert (got.ref.id, got.ref.forge, got.ref.head_sha) == ("octo/repo#7", "github", "a" * 40)
    draft = github_action("pull_request", github_pr(draft=True), "d1")
    assert isinstance(draft, Ignore) and "draft" in draft.reason


@pytest.mark.parametrize(
    ("association", "want"), [(None, None), (3, None), (["MEMBER"], None), ("OWNER", "OWNER")]
)
def test_github_association_is_a_string_or_none(association: object, want: str | None) -> None:
    got = github_action("pull_request", github_pr(author_association=association), None)
    assert isinstance(got, Enqueue) and got.association == want


def _repo(id_: int, fork: object = None) -> dict[str, Any]:
    repo: dict[str, Any] = {"id": id_}
    if fork is not None:
        repo["fork"] = fork
    return repo


@pytest.mark.parametrize(
    ("head", "base", "fork"),
    [
        ({"repo": _repo(1)}, {"repo": _repo(1)}, False),  # same repository
        ({"repo": _repo(1, fork=False)}, {"repo": _repo(1)}, False),
        ({"repo": _repo(2)}, {"repo": _repo(1)}, True),  # another repository
        ({"repo": _repo(1, fork=True)}, {"repo": _repo(1)}, True),  # flagged a fork
        ({"repo": None}, {"repo": _repo(1)}, True),  # the fork was deleted since
        ({"sha": "a" * 40}, {"repo": _repo(1)}, True),  # no head repository at all
        ({"repo": _repo(2)}, {}, False),  # no base repository: says nothing
        ({"repo": _repo(2)}, {"repo": None}, False),
    ],
)
def test_github_fork_rule(head: dict[str, Any], base: dict[str, Any], fork: bool) -> None:
    head = {"sha": "a" * 40, **head}
    got = github_action("pull_request", github_pr(head=head, base=base), None)
    assert isinstance(got, Enqueue) and got.fork is fork


def gitlab_mr(**attrs: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "object_kind": "merge_request",
        "project": {"path_with_namespace": "grp/sub/proj"},
        "object_attributes": {
            "iid": 4,
            "action": "open",
            "state": "opened",
            "last_commit": {"id": "b" * 40},
        },
    }
    data["object_attributes"].update(attrs)
    return data


def test_gitlab_enqueue_carries_its_source() -> None:
    got = gitlab_action(gitlab_mr(), "u1")
    assert isinstance(got, Enqueue)
    assert got.source == {"kind": "gitlab", "project": "grp/sub/proj", "iid": 4, "delivery": "u1"}
    assert (got.repo, got.fork, got.ref.forge) == ("grp/sub/proj", False, "gitlab")


@pytest.mark.parametrize("key", ["draft", "work_in_progress"])
def test_gitlab_drafts_wait(key: str) -> None:
    got = gitlab_action(gitlab_mr(**{key: True}), "u1")
    assert isinstance(got, Ignore) and "draft" in got.reason
    assert isinstance(gitlab_action(gitlab_mr(**{key: False}), "u1"), Enqueue)


@pytest.mark.parametrize(
    ("source", "target", "fork"),
    [(1, 1, False), (2, 1, True), (None, 1, False), (1, None, False), (None, None, False)],
)
def test_gitlab_fork_rule(source: int | None, target: int | None, fork: bool) -> None:
    attrs = {"source_project_id": source, "target_project_id": target}
    got = gitlab_action(gitlab_mr(**attrs), None)
    assert isinstance(got, Enqueue) and got.fork is fork


def test_gitlab_errors_name_the_payload_key() -> None:
    data = gitlab_mr()
    del data["object_attributes"]["last_commit"]
    with pytest.raises(BadPayload, match=r"object_attributes\.last_commit\.id"):
        gitlab_action(data, None)
    data = gitlab_mr(iid="4")
    with pytest.raises(BadPayload, match=r"object_attributes\.iid"):
        gitlab_action(data, None)
    data = copy.deepcopy(gitlab_mr())
    data["project"]["path_with_namespace"] = "no slash at all/"
    with pytest.raises(BadPayload, match=r"project\.path_with_namespace"):
        gitlab_action(data, None)


def test_flag_is_false_only_when_absent_or_null() -> None:
    assert flag({"a": {"b": True}}, "a.b") is True
    assert flag({"a": {"b": False}}, "a.b") is False
    for data in ({}, {"a": None}, {"a": {"b": None}}, {"a": 3}):
        assert flag(data, "a.b") is False, data
    with pytest.raises(BadPayload, match=r"a\.b must be a boolean"):
        flag({"a": {"b": "yes"}}, "a.b")


def test_pr_id_errors_name_their_origin() -> None:
    values = {"id": "o/r#1", "forge": "github", "owner": "o", "repo": "r", "number": -1}
    with pytest.raises(BadPayload, match=r"^pull_request\.number: "):
        pr_id(values, {"number": "pull_request.number"})
    with pytest.raises(BadPayload, match=r"^number: "):
        pr_id(values, {})


# --- `now_label`: the label a `labeled` event added (octokit's labeled example) -------


def labeled(label: object) -> dict[str, Any]:
    """octokit's `labeled` payload, its `label` replaced (the PR's own list unchanged)."""
    data = github_fixture("labeled")
    data["label"] = label
    return data


def test_adding_the_now_label_reviews_at_once() -> None:
    got = github_action("pull_request", github_fixture("labeled"), "d", now_label="bug")
    assert isinstance(got, Enqueue) and got.ref.id == "Codertocat/Hello-World#2"
    assert got.source == {"kind": "github", "delivery": "d", "now": True}
    assert got.unchanged == "label 'bug' added: reviewed now, not off-peak"


@pytest.mark.parametrize(
    ("action", "label", "now_label"),
    [
        pytest.param("labeled", {"name": "bug"}, "review-now", id="another-label"),
        pytest.param("labeled", {"name": "bug"}, None, id="no-now-label-configured"),
        pytest.param("unlabeled", {"name": "bug"}, "bug", id="removed"),
        pytest.param("labeled", None, "bug", id="no-label"),
        pytest.param("labeled", "bug", "bug", id="label-not-an-object"),
        pytest.param("labeled", {"id": 1}, "bug", id="label-without-name"),
        pytest.param("labeled", {"name": ["bug"]}, "bug", id="name-not-a-string"),
        pytest.param("labeled", {"NAME": "bug"}, "bug", id="other-key"),
    ],
)
def test_only_the_now_label_being_added_asks_for_a_review(
    action: str, label: object, now_label: str | None
) -> None:
    data = labeled(label)
    data["action"] = action
    got = github_action("pull_request", data, "d", now_label=now_label)
    assert got == Ignore(f"pull_request action {action!r} needs no review")


def test_the_now_label_on_the_pr_marks_any_reviewed_event_now() -> None:
    data = github_fixture("synchronize")
    data["pull_request"]["labels"] = [{"name": "review-now"}, "junk", {"name": 3}]
    got = github_action("pull_request", data, "d", now_label="review-now")
    assert isinstance(got, Enqueue) and got.source.get("now") is True and got.unchanged is None
    plain = github_action(
        "pull_request", github_fixture("synchronize"), "d", now_label="review-now"
    )
    assert isinstance(plain, Enqueue) and "now" not in plain.source
