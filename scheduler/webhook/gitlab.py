"""GitLab deliveries: the token check and what a merge request event asks for.

GitLab does not sign bodies; it sends the webhook's secret token as `X-Gitlab-Token`,
compared here in constant time. A merge request's id is `group/project!iid`, subgroups
included (`group/sub/project!iid`).
"""

from __future__ import annotations

import hmac
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

# `update` is also sent for title or label edits; enqueue_pr drops a head already queued.
REVIEWED_ACTIONS = frozenset({"open", "update", "reopen"})
_CLOSING = {"close": "closed", "merge": "merged"}
_SHOWN = 60


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
    if flag(data, "object_attributes.draft") or flag(data, "object_attributes.work_in_progress"):
        return Ignore("draft merge request: it is reviewed once marked ready")
    values, origins = _identity(data)
    values["head_sha"] = field(data, "object_attributes.last_commit.id", str)
    origins["head_sha"] = "object_attributes.last_commit.id"
    ref = make_ref(values, origins)
    path, iid = f"{ref.owner}/{ref.repo}", ref.number
    source = {"kind": "gitlab", "project": path, "iid": iid, "delivery": delivery}
    return Enqueue(ref, source, repo=path, fork=_from_fork(data))


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


def _from_fork(data: dict[str, Any]) -> bool:
    """GitLab names both projects of an MR; they differ when the source is a fork."""
    attrs = data.get("object_attributes")
    if not isinstance(attrs, dict):
        return False
    source, target = attrs.get("source_project_id"), attrs.get("target_project_id")
    return source is not None and target is not None and source != target
