"""What the fake GitLab holds: merge requests and their diff versions, the file
contents behind them, discussions and notes, pending faults, counters.

Like the fake GitHub it is its own referee: it reads diffs with its own code and
shares nothing with the client under test (no `workers` import at all). Handlers never
`await` between reading and changing this state, and uvicorn runs them on one event
loop, so no lock is needed.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from scheduler.sandbox.gitlab.exchanges import EXCHANGE_LOG_ENV

__all__ = [
    "DEV_GITLAB_TOKEN",
    "FakeDiscussion",
    "FakeGitLab",
    "FakeGitLabConfig",
    "FakeMr",
    "FakeNote",
    "FakeVersion",
    "FaultsUpdate",
    "MrFile",
    "MrSpec",
    "NoteSpec",
    "line_map",
]

# Not a secret: a fixed token so that scripts and docs can name it.
DEV_GITLAB_TOKEN = "glpat-sandbox-reviewq-dev-token"

_HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")
_PROJECT = r"^[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+$"
_Fault = Literal[
    "rate_limit", "server_error", "after_create", "note_after_create", "slow", "compare_timeout"
]


class FakeGitLabConfig(BaseModel):
    """`remote_control` opens `/_gl/*` to non-loopback clients; leave it off.

    The token acts as `bot_username`: `GET /user` names it, and notes posted with the
    token are written by it. A file's diff longer than `collapse_chars` is listed
    `collapsed` (empty), longer than `too_large_chars` `too_large`, as GitLab's diff
    limits do (a tenth of the limit, and the limit)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token: str = Field(default=DEV_GITLAB_TOKEN, min_length=1)
    bot_username: str = Field(default="reviewq-bot", min_length=1)
    max_per_page: int = Field(default=100, ge=1)
    default_per_page: int = Field(default=20, ge=1)
    collapse_chars: int = Field(default=20_000, ge=1)
    too_large_chars: int = Field(default=200_000, ge=1)
    remote_control: bool = False
    # Where to record every API exchange (`exchanges.py`); off unless the env var is set.
    exchange_log: str | None = Field(default_factory=lambda: os.environ.get(EXCHANGE_LOG_ENV))

    def token_matches(self, private: str | None, authorization: str | None) -> bool:
        """`PRIVATE-TOKEN: <token>` or `Authorization: Bearer <token>`. A blank
        `PRIVATE-TOKEN` counts as none, as GitLab reads it (`.presence`)."""
        given = private if private and private.strip() else None
        if given is None and authorization:
            scheme, _, value = authorization.strip().partition(" ")
            given = value.strip() if scheme.lower() == "bearer" else None
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())


class MrFile(BaseModel):
    """One file of a version: its diff as GitLab stores it (hunks only), and what
    `repository/files/:path/raw` serves at the base (`old_content`) and head."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    old_path: str = Field(min_length=1)
    new_path: str = Field(min_length=1)
    diff: str = ""
    new_file: bool = False
    deleted_file: bool = False
    renamed_file: bool = False
    generated_file: bool = False
    old_content: str | None = None
    new_content: str | None = None


class MrSpec(BaseModel):
    """`POST /_gl/mrs`: an MR to create, or a new head (a new diff version) for one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    project: str = Field(pattern=_PROJECT)
    iid: int = Field(ge=1)
    head_sha: str = Field(min_length=7, max_length=64)
    base_sha: str = Field(default="0" * 40, min_length=7, max_length=64)
    title: str = "A merge request"
    state: Literal["opened", "closed", "merged", "locked"] = "opened"
    draft: bool = False
    files: tuple[MrFile, ...] = ()
    # Other files of the repository at this head, as `repository/files/:path/raw`
    # serves them (a `.gitattributes`).
    repo_files: dict[str, str] = Field(default_factory=dict)


class NoteSpec(BaseModel):
    """`POST /_gl/notes`: a note by someone other than the token's account."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    project: str = Field(pattern=_PROJECT)
    iid: int = Field(ge=1)
    username: str = Field(min_length=1)
    body: str = Field(min_length=1)
    system: bool = False


class FaultsUpdate(BaseModel):
    """`POST /_gl/faults`; counts are how many upcoming API requests misbehave.

    `rate_limit`: 429s, with `Retry-After: retry_after_s` (None: only the
    `RateLimit-Reset` epoch, `reset_in_s` away). `server_error`: 502s before anything
    is done. `after_create`: a note or discussion POST stores it, then answers 502;
    `note_after_create` the same for the summary note's POST (`/notes`) only.
    `slow`: requests answered after `slow_s` (a client with a shorter timeout gives
    up; a POST is stored all the same)."""

    model_config = ConfigDict(extra="forbid")

    rate_limit: int | None = Field(default=None, ge=0)
    retry_after_s: int | None = Field(default=1, ge=0)
    reset_in_s: int | None = Field(default=None, ge=0)
    server_error: int | None = Field(default=None, ge=0)
    after_create: int | None = Field(default=None, ge=0)
    note_after_create: int | None = Field(default=None, ge=0)
    slow: int | None = Field(default=None, ge=0)
    slow_s: float | None = Field(default=None, ge=0, le=60)
    # Comparisons answered with `compare_timeout` set and no diffs.
    compare_timeout: int | None = Field(default=None, ge=0)


@dataclass
class Faults:
    rate_limit: int = 0
    retry_after_s: int | None = 1
    reset_in_s: int = 1
    server_error: int = 0
    after_create: int = 0
    note_after_create: int = 0
    slow: int = 0
    compare_timeout: int = 0
    slow_s: float = 5.0


@dataclass
class FakeVersion:
    id: int
    head_sha: str
    base_sha: str
    files: tuple[MrFile, ...]
    created_at: str
    repo_files: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeMr:
    """An MR; every head it has had is a version, newest last."""

    project: str
    project_id: int
    iid: int
    title: str
    state: str
    draft: bool
    versions: list[FakeVersion] = field(default_factory=list)

    @property
    def latest(self) -> FakeVersion:
        return self.versions[-1]


@dataclass
class FakeNote:
    id: int
    body: str
    author: str
    system: bool
    created_at: str
    position: dict[str, Any] | None = None

    def as_json(self, mr: FakeMr) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "DiffNote" if self.position else None,
            "body": self.body,
            "author": {"id": _user_id(self.author), "username": self.author, "name": self.author},
            "created_at": self.created_at,
            "updated_at": self.created_at,
            "system": self.system,
            "noteable_id": mr.project_id * 1000 + mr.iid,
            "noteable_type": "MergeRequest",
            "noteable_iid": mr.iid,
            "position": self.position,
            "resolvable": self.position is not None,
        }


@dataclass
class FakeDiscussion:
    id: str
    individual_note: bool
    notes: list[FakeNote]

    def as_json(self, mr: FakeMr) -> dict[str, Any]:
        notes = [n.as_json(mr) for n in self.notes]
        return {"id": self.id, "individual_note": self.individual_note, "notes": notes}


def _user_id(username: str) -> int:
    return int(hashlib.sha1(username.lower().encode()).hexdigest()[:7], 16)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def line_map(diff: str) -> tuple[dict[int, int | None], set[int]]:
    """A diff's placeable lines: each new-side line with its old line (None when the
    line was added), and the old lines that were removed."""
    new_side: dict[int, int | None] = {}
    removed: set[int] = set()
    old = new = 0
    in_hunk = False
    for line in diff.split("\n"):
        header = _HUNK.match(line)
        if header:
            old, new, in_hunk = int(header[1]), int(header[2]), True
        elif not in_hunk or line.startswith("\\"):
            continue
        elif line.startswith("-"):
            removed.add(old)
            old += 1
        elif line.startswith("+"):
            new_side[new] = None
            new += 1
        elif line.startswith(" ") or line == "":
            new_side[new] = old
            old, new = old + 1, new + 1
    return new_side, removed


class FakeGitLab:
    """All the fake's state; `app.state.gitlab` holds one per app."""

    def __init__(self, config: FakeGitLabConfig) -> None:
        self.config = config
        self.mrs: dict[tuple[str, int], FakeMr] = {}
        self._ids = itertools.count(1_000_001)
        self.reset()

    def reset(self) -> None:
        """Forget notes, faults and counters; MRs stay."""
        self.discussions: dict[tuple[str, int], list[FakeDiscussion]] = {}
        self.faults = Faults()
        self.stats: Counter[tuple[str, int]] = Counter()

    def upsert(self, spec: MrSpec) -> FakeMr:
        key = (spec.project, spec.iid)
        mr = self.mrs.get(key)
        if mr is None:
            project_id = _user_id(spec.project)
            mr = FakeMr(spec.project, project_id, spec.iid, spec.title, spec.state, spec.draft)
            self.mrs[key] = mr
        mr.title, mr.state, mr.draft = spec.title, spec.state, spec.draft
        version = FakeVersion(
            next(self._ids), spec.head_sha, spec.base_sha, spec.files, _now(), spec.repo_files
        )
        if mr.versions and mr.latest.head_sha == spec.head_sha:
            mr.versions[-1] = version  # the same head: its files replaced
        else:
            mr.versions.append(version)
        return mr

    def project_known(self, project: str) -> bool:
        return any(p == project for p, _ in self.mrs)

    def take(self, fault: _Fault) -> bool:
        """Use up one injected fault of that kind, if any is left."""
        left: int = getattr(self.faults, fault)
        if left <= 0:
            return False
        setattr(self.faults, fault, left - 1)
        return True

    def update_faults(self, update: FaultsUpdate) -> None:
        for name, value in update.model_dump(exclude_unset=True).items():
            if value is not None or name == "retry_after_s":
                setattr(self.faults, name, value)

    def add_note(
        self,
        mr: FakeMr,
        body: str,
        author: str,
        *,
        position: dict[str, Any] | None = None,
        system: bool = False,
    ) -> FakeDiscussion:
        note = FakeNote(next(self._ids), body, author, system, _now(), position)
        digest = hashlib.sha1(f"{mr.project}!{mr.iid}:{note.id}".encode()).hexdigest()
        discussion = FakeDiscussion(digest, position is None, [note])
        self.discussions.setdefault((mr.project, mr.iid), []).append(discussion)
        return discussion

    def content(self, project: str, path: str, ref: str) -> str | None:
        """What `repository/files/:path/raw?ref=` serves: the file at a version's head
        (its new side) or base (its old side)."""
        for (name, _), mr in self.mrs.items():
            if name != project:
                continue
            for version in mr.versions:
                if ref == version.head_sha and path in version.repo_files:
                    return version.repo_files[path]
                for f in version.files:
                    if ref == version.head_sha and f.new_path == path and not f.deleted_file:
                        return f.new_content
                    if ref == version.base_sha and f.old_path == path and not f.new_file:
                        return f.old_content
        return None

    def position_problem(self, mr: FakeMr, position: object) -> str | None:
        """Why GitLab would refuse a discussion at `position`, or None to accept it."""
        if not isinstance(position, dict) or position.get("position_type") != "text":
            return "position_type is missing or not text"
        version = next((v for v in mr.versions if v.head_sha == position.get("head_sha")), None)
        if version is None or position.get("base_sha") != version.base_sha:
            return "position's SHAs are not a diff version of the merge request"
        if position.get("start_sha") != version.base_sha:
            return "position's start_sha is not the version's start"
        file = next((f for f in version.files if f.new_path == position.get("new_path")), None)
        if file is None or position.get("old_path") != file.old_path:
            return "line_code"
        new_side, removed = line_map(file.diff)
        new, old = position.get("new_line"), position.get("old_line")
        if new is None:
            return None if isinstance(old, int) and old in removed else "line_code"
        if not isinstance(new, int) or new not in new_side:
            return "line_code"
        return None if new_side[new] == old else "line_code"

    def stats_json(self) -> dict[str, Any]:
        """Counts of API requests by route and status (control routes excluded)."""
        routes: dict[str, dict[str, int]] = {}
        by_status: Counter[str] = Counter()
        for (route, status), count in sorted(self.stats.items()):
            routes.setdefault(route, {})[str(status)] = count
            by_status[str(status)] += count
        notes = sum(len(d.notes) for ds in self.discussions.values() for d in ds)
        return {
            "requests": sum(self.stats.values()),
            "by_route": routes,
            "by_status": dict(by_status),
            "notes": notes,
        }
