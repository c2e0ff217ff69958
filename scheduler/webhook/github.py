"""GitHub deliveries: the signature check and what each event asks for.

GitHub signs the raw body with the webhook's secret (`X-Hub-Signature-256:
sha256=<hex HMAC-SHA256>`); the check runs before the body is parsed, so an unsigned
sender cannot make the server parse anything.
"""

from __future__ import annotations

import hashlib
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

__all__ = ["REVIEWED_ACTIONS", "github_action", "sign", "signature_ok"]

# A new head to review: the PR opened or reopened, a push (synchronize), or a draft
# marked ready.
REVIEWED_ACTIONS = frozenset({"opened", "synchronize", "reopened", "ready_for_review"})
# A closed PR, and a PR turned back into a draft, spend nothing more: their unstarted
# work is cancelled (a draft's head is queued again when it is marked ready).
_CANCELLING = {"closed": "closed", "converted_to_draft": "converted to draft"}
_SHOWN = 60  # characters of a sender's value echoed back in a reason


def sign(secret: bytes, body: bytes) -> str:
    """The header value GitHub sends for `body` (also what tests and the bench send)."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_ok(secret: bytes, body: bytes, header: str | None) -> bool:
    """Constant-time comparison. Headers arrive latin-1 decoded, so any byte the sender
    put there compares (and fails) instead of raising on non-ASCII text."""
    if not header:
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.encode("latin-1"))


def github_action(
    event: str, data: dict[str, Any], delivery: str | None, now_label: str | None = None
) -> Action:
    """What an event asks for; raises BadPayload naming a missing or mistyped key.

    `now_label` (`[webhook] now_label`): a PR that carries it is reviewed at once, never
    deferred to off-peak prices (`source["now"]`); the label being added asks for that
    of the head already queued."""
    if event == "ping":
        return Ignore("pong", ping=True)
    if event != "pull_request":
        return Ignore(f"event {event[:_SHOWN]!r} is not handled (only pull_request)")
    action = field(data, "action", str)
    if action in _CANCELLING:
        return Cancel(pr_id(*_identity(data)), _CANCELLING[action])
    labeled_now = action == "labeled" and now_label is not None and _label(data) == now_label
    if action not in REVIEWED_ACTIONS and not labeled_now:
        return Ignore(f"pull_request action {action[:_SHOWN]!r} needs no review")
    if flag(data, "pull_request.draft"):
        return Ignore("draft pull request: it is reviewed once marked ready for review")
    values, origins = _identity(data)
    values["head_sha"] = field(data, "pull_request.head.sha", str)
    origins["head_sha"] = "pull_request.head.sha"
    ref = make_ref(values, origins)
    source: dict[str, Any] = {"kind": "github", "delivery": delivery}
    if labeled_now or (now_label is not None and now_label in _labels(data)):
        source["now"] = True
    return Enqueue(
        ref,
        source,
        repo=f"{ref.owner}/{ref.repo}",
        association=_association(data),
        fork=_from_fork(data),
        unchanged=f"label {now_label!r} added: reviewed now, not off-peak" if labeled_now else None,
    )


def _label(data: dict[str, Any]) -> str | None:
    """The label a `labeled` event added."""
    label = data.get("label")
    name = label.get("name") if isinstance(label, dict) else None
    return name if isinstance(name, str) else None


def _labels(data: dict[str, Any]) -> set[str]:
    """The PR's labels' names (an absent or odd list is no labels)."""
    pr = data.get("pull_request")
    labels = pr.get("labels") if isinstance(pr, dict) else None
    if not isinstance(labels, list):
        return set()
    names = (item.get("name") for item in labels if isinstance(item, dict))
    return {name for name in names if isinstance(name, str)}


def _identity(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The PR's ref fields, and the payload key each came from (for error messages)."""
    owner = field(data, "repository.owner.login", str)
    repo = field(data, "repository.name", str)
    number = field(data, "pull_request.number", int)
    values = {
        "id": f"{owner}/{repo}#{number}",
        "forge": "github",
        "owner": owner,
        "repo": repo,
        "number": number,
    }
    origins = {
        "id": "repository.full_name",
        "owner": "repository.owner.login",
        "repo": "repository.name",
        "number": "pull_request.number",
    }
    return values, origins


def _association(data: dict[str, Any]) -> str | None:
    pr = data.get("pull_request")
    value = pr.get("author_association") if isinstance(pr, dict) else None
    return value if isinstance(value, str) else None


def _from_fork(data: dict[str, Any]) -> bool:
    """A head repository other than the base (or one deleted since: `repo` null)."""
    pr = data["pull_request"]
    head, base = pr.get("head"), pr.get("base")
    head_repo = head.get("repo") if isinstance(head, dict) else None
    base_repo = base.get("repo") if isinstance(base, dict) else None
    if not isinstance(base_repo, dict):
        return False  # a payload without the base repository says nothing either way
    if not isinstance(head_repo, dict):
        return True
    return bool(head_repo.get("fork")) or head_repo.get("id") != base_repo.get("id")
