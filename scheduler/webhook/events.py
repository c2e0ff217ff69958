"""What a delivery asks for, independent of the forge that sent it.

Each forge's module turns a verified payload into one `Action`; the app carries it out.
Reading a payload goes through `field`, so a payload missing a key, or carrying the
wrong type, becomes a `BadPayload` that names the key (`pull_request.head.sha`), never
a KeyError that would surface as a 500.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import ValidationError

from scheduler.state.refs import PullRequestRef

__all__ = [
    "Action",
    "BadPayload",
    "Cancel",
    "Enqueue",
    "Ignore",
    "field",
    "flag",
    "make_ref",
    "parse_json",
    "pr_id",
]

T = TypeVar("T")
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", dict: "an object"}


class BadPayload(ValueError):
    """The payload cannot be what the forge sends; the message names the key."""


@dataclass(frozen=True, slots=True)
class Enqueue:
    """Review this head of a PR (a PR opened, or a new commit pushed to it).

    `repo`, `association` and `fork` are what the gate (`scheduler.webhook.gate`)
    decides on: the repository's full name, GitHub's `author_association` of the PR's
    author (None where the forge has none), and whether the head lives in a fork.

    `unchanged` is set when the event says nothing about the code (a GitLab `update`
    without `oldrev`: a label, title or assignee edit): the head is queued only if it
    moved past the one reviewq finished, and otherwise the delivery is ignored with
    `unchanged` as the reason."""

    ref: PullRequestRef
    source: dict[str, Any]
    repo: str = ""
    association: str | None = None
    fork: bool = False
    unchanged: str | None = None


@dataclass(frozen=True, slots=True)
class Cancel:
    """The PR closed (or merged): its unstarted work must not spend quota."""

    pr: str
    reason: str


@dataclass(frozen=True, slots=True)
class Ignore:
    """Nothing to do; the reason goes back to the sender, who sees it in its log."""

    reason: str
    ping: bool = False


Action = Enqueue | Cancel | Ignore


def parse_json(body: bytes) -> dict[str, Any]:
    """The payload as an object; anything else is a BadPayload."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise BadPayload("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadPayload("the body must be a JSON object")
    return data


def field(data: dict[str, Any], path: str, kind: type[T]) -> T:
    """`data["a"]["b"]` for `path="a.b"`, checked to be of `kind`; booleans are not ints."""
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise BadPayload(f"{path} is required")
        node = node[part]
    if not isinstance(node, kind) or (kind is int and isinstance(node, bool)):
        raise BadPayload(f"{path} must be {_TYPE_NAMES.get(kind, kind.__name__)}")
    return node


def flag(data: dict[str, Any], path: str) -> bool:
    """An optional boolean: absent or null is False, anything else must be a boolean."""
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or node.get(part) is None:
            return False
        node = node[part]
    if not isinstance(node, bool):
        raise BadPayload(f"{path} must be a boolean")
    return node


def make_ref(values: dict[str, Any], origins: dict[str, str]) -> PullRequestRef:
    """A PullRequestRef, or a BadPayload naming the payload key (`origins` maps each
    ref field to it) whose value does not fit, e.g. a head SHA longer than any SHA."""
    try:
        return PullRequestRef(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name, msg = (str(err["loc"][0]) if err["loc"] else ""), err["msg"]
        if not name:  # a check across fields names its field first: "owner: ..."
            name, _, msg = msg.removeprefix("Value error, ").partition(": ")
        raise BadPayload(f"{origins.get(name, name)}: {msg}") from None


def pr_id(values: dict[str, Any], origins: dict[str, str]) -> str:
    """The PR id `values` spell, checked as a head's ref would be, for events that name
    a PR without a head to review (a close)."""
    return make_ref({**values, "head_sha": "0" * 40}, origins).id
