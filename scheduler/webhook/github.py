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


def github_action(event: str, data: dict[str, Any], delivery: str | None) -> Action:
    """What an event asks for; raises BadPayload naming a missing or mistyped key."""
    if event == "ping":
        return Ignore("pong", ping=True)
    if event != "pull_request":
        return Ignore(f"event {event[:_SHOWN]!r} is not handled (only pull_request)")
    action = field(data, "action", str)
    if action == "closed":
        return Cancel(pr_id(*_identity(data)), "closed")
    if action not in REVIEWED_ACTIONS:
        return Ignore(f"pull_request action {action[:_SHOWN]!r} needs no review")
    if flag(data, "pull_request.draft"):
        return Ignore("draft pull request: it is reviewed once marked ready for review")
    values, origins = _identity(data)
    values["head_sha"] = field(data, "pull_request.head.sha", str)
    origins["head_sha"] = "pull_request.head.sha"
    ref = make_ref(values, origins)
    return Enqueue(
        ref,
        {"kind": "github", "delivery": delivery},
        repo=f"{ref.owner}/{ref.repo}",
        association=_association(data),
        fork=_from_fork(data),
    )


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
