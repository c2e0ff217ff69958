"""What GitHub refuses, in its words: requests it will not serve, reviews it will not store.

Headers first, as GitHub's front end reads them: no `User-Agent` is a plain-text 403,
an API version it does not serve a 400, an `Accept` that takes no JSON a 415. Then a
review: its event, body and comments. A comment is anchored either by `line` (and
`side`, and for a range `start_line`/`start_side`) in the file's diff, or by the
older `position`, counted in lines below the file's first hunk header.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers

from scheduler.sandbox.github.state import FakePull, diff_lines
from workers.review.changes import ChangedFile

__all__ = [
    "API_VERSION",
    "MAX_REVIEW_BODY",
    "STATES",
    "USER_AGENT_REFUSAL",
    "diff_positions",
    "header_problem",
    "review_problem",
]

API_VERSION = "2022-11-28"
MAX_REVIEW_BODY = 65_536
STATES = {"COMMENT": "COMMENTED", "APPROVE": "APPROVED", "REQUEST_CHANGES": "CHANGES_REQUESTED"}
USER_AGENT_REFUSAL = (
    "Request forbidden by administrative rules. Please make sure your request has a "
    "User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api"
    "#user-agent-required). Check https://developer.github.com for other possible causes."
)
_JSON_TYPES = {"*/*", "application/*", "application/json"}


def _takes_json(accept: str) -> bool:
    """GitHub's JSON media types: plain JSON, `vnd.github+json`, `vnd.github.v3+json`
    and the custom ones (`vnd.github.raw+json`...) that change only some fields."""
    for item in accept.split(","):
        media = item.split(";", 1)[0].strip().lower()
        if media in _JSON_TYPES:
            return True
        if media.startswith("application/vnd.github") and media.endswith("+json"):
            return True
    return False


def header_problem(headers: Headers) -> tuple[int, str] | None:
    """(status, message) for a request GitHub refuses before reading it, else None."""
    if not headers.get("user-agent", "").strip():
        return 403, USER_AGENT_REFUSAL
    version = headers.get("x-github-api-version")
    if version is not None and version.strip() != API_VERSION:
        return 400, f"API version {version.strip()!r} is not supported."
    accept = headers.get("accept")
    if accept is not None and accept.strip() and not _takes_json(accept):
        return (
            415,
            f"Unsupported 'Accept' header: {accept.strip()!r}. Must accept 'application/json'.",
        )
    return None


def diff_positions(patch: str) -> frozenset[int]:
    """Positions a comment can take: lines below the first hunk header, counting
    later headers too, that are a context, added or removed line."""
    found: set[int] = set()
    position = 0
    for line in patch.splitlines():
        if position == 0 and not line.startswith("@@"):
            continue
        if position > 0 and line[:1] in (" ", "+", "-", ""):
            found.add(position)
        position += 1
    return frozenset(found)


def review_problem(pull: FakePull, data: dict[str, Any], pending: bool) -> str | None:
    """GitHub's first complaint about a review, in its words, or None if it is fine.
    `pending`: the token's account already holds a PENDING review of this PR."""
    commit = data.get("commit_id") or pull.head_sha
    if not isinstance(commit, str) or commit not in pull.files_by_sha:
        return f"No commit found for SHA: {commit}"
    event, body, comments = data.get("event"), data.get("body") or "", data.get("comments") or []
    if event is not None and event not in STATES:
        return f"Event {event!r} is not one of APPROVE, REQUEST_CHANGES, COMMENT"
    if not isinstance(body, str):
        return "Body must be a string"
    if len(body) > MAX_REVIEW_BODY:
        return f"Body is too long (maximum is {MAX_REVIEW_BODY} characters)"
    if not isinstance(comments, list):
        return "Comments is not an array"
    if event in ("COMMENT", "REQUEST_CHANGES") and not body:
        return "Body is required for this event"
    if event is None and pending:
        return "User can only have one pending review per pull request"
    files = {f.filename: f for f in pull.files_by_sha[commit]}
    for comment in comments:
        problem = _comment_problem(comment, files)
        if problem is not None:
            return problem
    return None


def _comment_problem(comment: object, files: dict[str, ChangedFile]) -> str | None:
    if not isinstance(comment, dict) or not isinstance(comment.get("body"), str):
        return "Body can't be blank"
    path = comment.get("path")
    changed = files.get(path) if isinstance(path, str) else None
    if changed is None:
        return "Path could not be resolved"
    if comment.get("line") is None and comment.get("position") is not None:
        position = comment["position"]
        if not _is_int(position) or changed.patch is None:
            return "Position could not be resolved"
        return (
            None if position in diff_positions(changed.patch) else "Position could not be resolved"
        )
    return _line_problem(comment, changed)


def _line_problem(comment: dict[str, Any], changed: ChangedFile) -> str | None:
    line, side = comment.get("line"), comment.get("side", "RIGHT")
    start, start_side = comment.get("start_line"), comment.get("start_side", side)
    if side not in ("LEFT", "RIGHT") or start_side not in ("LEFT", "RIGHT"):
        return "Side must be LEFT or RIGHT"
    if not _is_int(line) or changed.patch is None:
        return "Line could not be resolved"
    left, right = diff_lines(changed.patch)
    if line not in (right if side == "RIGHT" else left):
        return "Line could not be resolved"
    if start is None:
        return None
    if not _is_int(start) or start not in (right if start_side == "RIGHT" else left):
        return "Start line could not be resolved"
    if start_side == side and start >= line:
        return "Start line must precede line"
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
