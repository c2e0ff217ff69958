"""GitLab deliveries: the token check and what a merge request event asks for.

GitLab does not sign bodies; it sends the webhook's secret token as `X-Gitlab-Token`,
compared here in constant time. A merge request's id is `group/project!iid`, subgroups
included (`group/sub/project!iid`).

GitLab sends one `update` action for everything: a push, a label, a title, an
assignee, a draft toggle. Real deliveries (tests/fixtures/webhooks) showed that
reading the action alone re-queued a closed MR on a label edit. So an event acts only
on an open MR (`object_attributes.state`), a push is told by `oldrev` (GitLab sets it
only when commits changed), a draft toggle by `changes.draft` (older GitLab:
`changes.work_in_progress`, or the `Draft:` prefix of `changes.title`), and an update
that is none of these is queued only if its `last_commit` moved past the head reviewq
finished (see `Enqueue.unchanged`). `changes` is advisory (GitLab has sent stale
entries there), so it never decides that code changed, and a malformed one is ignored
rather than refused.
"""

from __future__ import annotations

import hmac
import re
from typing import Any

from scheduler.webhook.events import (
    Action,
    Cancel,
    Enqueue,
    Ignore,
    field,
    flag,
    make_ref,
    pr_id,
)

__all__ = ["REVIEWED_ACTIONS", "gitlab_action", "token_ok"]

REVIEWED_ACTIONS = frozenset({"open", "update", "reopen"})
_CLOSING = {"close": "closed", "merge": "merged"}
_SHOWN = 60
# GitLab's own reading of a draft title: `Draft:`, `[Draft]`, `(Draft)`, `Draft - `
# and the older `WIP:` forms, at the start, any case.
_DRAFT_TITLE = re.compile(
    r"^\s*(?:\[(?:draft|wip)\]|\((?:draft|wip)\)|(?:draft|wip):|draft\s)", re.I
)
# Edits that never change the code, named in the reason an ignored update gets.
_NOT_CODE = ("labels", "assignees", "reviewers", "milestone_id", "title", "description")


def token_ok(token: bytes, header: str | None) -> bool:
    if not header:
        return False
    return hmac.compare_digest(token, header.encode("latin-1"))


def gitlab_action(data: dict[str, Any], delivery: str | None) -> Action:
    """What an event asks for; raises BadPayload naming a missing or mistyped key."""
    kind = field(data, "object_kind", str)
    if kind != "merge_request":
        return Ignore(f"object_kind {kind[:_SHOWN]!r} is not handled (only merge_request)")
    action = field(data, "object_attributes.action", str)
    if action in _CLOSING:
        return Cancel(pr_id(*_identity(data)), _CLOSING[action])
    if action not in REVIEWED_ACTIONS:
        return Ignore(f"merge_request action {action[:_SHOWN]!r} needs no review")
    state = _text(data, "object_attributes.state")
    if state is not None and state != "opened":
        return Ignore(f"the merge request is {state[:_SHOWN]}: only open ones are reviewed")
    turned = _draft_toggle(data)
    if flag(data, "object_attributes.draft") or flag(data, "object_attributes.work_in_progress"):
        if turned is True:
            return Cancel(pr_id(*_identity(data)), "converted to draft")
        return Ignore("draft merge request: it is reviewed once marked ready")
    values, origins = _identity(data)
    values["head_sha"] = field(data, "object_attributes.last_commit.id", str)
    origins["head_sha"] = "object_attributes.last_commit.id"
    ref = make_ref(values, origins)
    path, iid = f"{ref.owner}/{ref.repo}", ref.number
    source = {"kind": "gitlab", "project": path, "iid": iid, "delivery": delivery}
    unchanged = None
    if action == "update" and turned is None and not _text(data, "object_attributes.oldrev"):
        unchanged = _unchanged_reason(data)
    return Enqueue(ref, source, repo=path, fork=_from_fork(data), unchanged=unchanged)


def _identity(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The MR's ref fields, and the payload key each came from (for error messages)."""
    path = field(data, "project.path_with_namespace", str)
    iid = field(data, "object_attributes.iid", int)
    group, _, project = path.rpartition("/")
    values = {
        "id": f"{path}!{iid}",
        "forge": "gitlab",
        "owner": group or None,
        "repo": project,
        "number": iid,
    }
    where = "project.path_with_namespace"
    origins = {"id": where, "owner": where, "repo": where, "number": "object_attributes.iid"}
    return values, origins


def _text(data: dict[str, Any], path: str) -> str | None:
    """An optional string: absent, null or of another type is None."""
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node if isinstance(node, str) else None


def _changes(data: dict[str, Any]) -> dict[str, Any]:
    changes = data.get("changes")
    return changes if isinstance(changes, dict) else {}


def _draft_toggle(data: dict[str, Any]) -> bool | None:
    """True: this event made the MR a draft; False: it marked it ready; None: neither."""
    changes = _changes(data)
    for key in ("draft", "work_in_progress"):
        change = changes.get(key)
        if (
            isinstance(change, dict)
            and isinstance(change.get("current"), bool)
            and change.get("previous") != change["current"]
        ):
            return bool(change["current"])
    title = changes.get("title")
    if isinstance(title, dict):
        before, after = title.get("previous"), title.get("current")
        if isinstance(before, str) and isinstance(after, str):
            was, now = bool(_DRAFT_TITLE.match(before)), bool(_DRAFT_TITLE.match(after))
            if was != now:
                return now
    return None


def _unchanged_reason(data: dict[str, Any]) -> str:
    edited = [key for key in _NOT_CODE if key in _changes(data)]
    what = ", ".join(edited) if edited else "no code"
    return (
        f"merge request update without new commits ({what} changed): the head is "
        "reviewed already or queued, so there is nothing new to review"
    )


def _from_fork(data: dict[str, Any]) -> bool:
    """GitLab names both projects of an MR; they differ when the source is a fork."""
    attrs = data.get("object_attributes")
    if not isinstance(attrs, dict):
        return False
    source, target = attrs.get("source_project_id"), attrs.get("target_project_id")
    return source is not None and target is not None and source != target
