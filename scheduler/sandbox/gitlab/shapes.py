"""The fake GitLab's JSON objects, each made from the example GitLab's API docs give for it.

`doc_examples.json` holds the example responses of GitLab's REST API pages
(`tests/fixtures/gitlab_api/` says which page and commit each comes from). Every object
the fake serves starts as a copy of one, with the fake's state overlaid: its ids,
SHAs, paths, authors and states. So a field GitLab sends that reviewq has never read
is still there, in GitLab's type, and nulls come where GitLab sends them (an MR with
no assignee, a note nobody resolved, a line a position is not on).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from scheduler.sandbox.gitlab.state import FakeDiscussion, FakeMr, FakeNote, FakeVersion, MrFile

__all__ = [
    "account_id",
    "commit_json",
    "current_user_json",
    "diff_json",
    "discussion_json",
    "merge_request_json",
    "note_json",
    "notes_newest_first",
    "user_json",
    "version_detail_json",
    "version_json",
]

_MR_AUTHOR = "author"  # the fake's MRs are all opened by this account
_TARGET_BRANCH = "main"


@cache
def _examples() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("doc_examples.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _example(name: str, *path: str | int) -> Any:
    """A fresh copy of an example, or of a part of one: callers overlay it."""
    node = _examples()[name]["example"]
    for key in path:
        node = node[key]
    return copy.deepcopy(node)


def account_id(username: str) -> int:
    """The id GitLab would give the account: the same one the state gives its notes."""
    return int(hashlib.sha1(username.lower().encode()).hexdigest()[:7], 16)


def mr_id(mr: FakeMr) -> int:
    return mr.project_id * 1000 + mr.iid


def user_json(username: str, base: str) -> dict[str, Any]:
    """GitLab's UserBasic (an author, a resolver), from the docs' discussion author."""
    user: dict[str, Any] = _example("merge_request_discussions", 0, "notes", 0, "author")
    user.update(id=account_id(username), username=username, name=username)
    user["avatar_url"] = None  # no avatar uploaded, as the Create MR example's author
    user["web_url"] = f"{base}/{username}"
    return user


def current_user_json(username: str, base: str) -> dict[str, Any]:
    """`GET /user` for a non-administrator token, from the docs' example."""
    user: dict[str, Any] = _example("current_user")
    user.update(user_json(username, base))
    user.update(email=f"{username}@example.com", public_email=None, identities=[], bio="")
    return user


def _branches(mr: FakeMr) -> dict[str, Any]:
    head = mr.latest
    return {
        "sha": head.head_sha,
        "diff_refs": {
            "base_sha": head.base_sha,
            "head_sha": head.head_sha,
            "start_sha": head.base_sha,
        },
        "source_branch": f"feature-{mr.iid}",
        "target_branch": _TARGET_BRANCH,
        "source_project_id": mr.project_id,
        "target_project_id": mr.project_id,
    }


def _lifecycle(mr: FakeMr, base: str) -> dict[str, Any]:
    """The fields that follow from the MR's state: who merged or closed it, and when."""
    merged, closed = mr.state == "merged", mr.state == "closed"
    updated = mr.latest.created_at
    by = user_json(_MR_AUTHOR, base)
    detailed = "not_open" if mr.state != "opened" else "draft_status" if mr.draft else "mergeable"
    return {
        "merged_by": by if merged else None,
        "merge_user": by if merged else None,
        "merged_at": updated if merged else None,
        "merge_commit_sha": None,
        "closed_by": by if closed else None,
        "closed_at": updated if closed else None,
        "merge_status": "can_be_merged",
        "detailed_merge_status": detailed,
    }


def merge_request_json(
    mr: FakeMr, base: str, *, user_notes: int, diverged: bool = False
) -> dict[str, Any]:
    """GitLab's MergeRequest entity: the docs' example with this MR overlaid.
    `diverged_commits_count` only when asked for, as GitLab sends it."""
    data: dict[str, Any] = _example("merge_request")
    data.update(id=mr_id(mr), iid=mr.iid, project_id=mr.project_id, title=mr.title)
    data.update(description=None, state=mr.state, draft=mr.draft, work_in_progress=mr.draft)
    data.update(created_at=mr.versions[0].created_at, updated_at=mr.latest.created_at)
    data.update(author=user_json(_MR_AUTHOR, base), assignee=None, labels=[], milestone=None)
    data.update(_branches(mr))
    data.update(_lifecycle(mr, base))
    data.update(pipeline=None, latest_build_started_at=None, latest_build_finished_at=None)
    data["merge_when_pipeline_succeeds"] = False
    data.update(merge_error=None, merge_after=None, prepared_at=mr.versions[0].created_at)
    data.update(user_notes_count=user_notes, changes_count=str(len(mr.latest.files)))
    data["web_url"] = f"{base}/{mr.project}/-/merge_requests/{mr.iid}"
    short = f"!{mr.iid}"
    data["references"] = {"short": short, "relative": short, "full": mr.project + short}
    if diverged:
        data["diverged_commits_count"] = 0
    else:
        del data["diverged_commits_count"]
    return data


def _patch_id(version: FakeVersion) -> str:
    """A stand-in for `git patch-id`: stable for the same changes, different otherwise."""
    text = "\0".join(f"{f.old_path}\0{f.new_path}\0{f.diff}" for f in version.files)
    return hashlib.sha1(text.encode()).hexdigest()


def version_json(mr: FakeMr, version: FakeVersion) -> dict[str, Any]:
    """GitLab's MergeRequestDiff: one diff version of the MR."""
    data: dict[str, Any] = _example("merge_request_versions", 0)
    data.update(id=version.id, head_commit_sha=version.head_sha, base_commit_sha=version.base_sha)
    data.update(start_commit_sha=version.base_sha, created_at=version.created_at)
    data.update(merge_request_id=mr_id(mr), state="collected", real_size=str(len(version.files)))
    data["patch_id_sha"] = _patch_id(version)
    return data


def commit_json(sha: str, title: str, created_at: str, project: str, base: str) -> dict[str, Any]:
    """GitLab's Commit entity, from the docs' diff-version example."""
    data: dict[str, Any] = _example("merge_request_version", "commits", 0)
    data.update(id=sha, short_id=sha[:8], title=title, message=title, parent_ids=[])
    data.update(authored_date=created_at, committed_date=created_at, created_at=created_at)
    data["web_url"] = f"{base}/{project}/-/commit/{sha}"
    return data


def diff_json(f: MrFile, *, collapse_chars: int | None, too_large_chars: int) -> dict[str, Any]:
    """GitLab's Diff entity. Over `too_large_chars` a file is `too_large`, over
    `collapse_chars` (None: no such limit) `collapsed`; either way its diff is empty."""
    too_large = len(f.diff) > too_large_chars
    collapsed = too_large or (collapse_chars is not None and len(f.diff) > collapse_chars)
    data: dict[str, Any] = _example("merge_request_diffs", 0)
    data.update(old_path=f.old_path, new_path=f.new_path, diff="" if collapsed else f.diff)
    data.update(a_mode="0" if f.new_file else "100644", b_mode="0" if f.deleted_file else "100644")
    data.update(new_file=f.new_file, renamed_file=f.renamed_file, deleted_file=f.deleted_file)
    data.update(generated_file=f.generated_file, collapsed=collapsed, too_large=too_large)
    return data


def version_detail_json(
    mr: FakeMr, version: FakeVersion, base: str, *, too_large_chars: int
) -> dict[str, Any]:
    """GitLab's MergeRequestDiffFull: the version, its commits, and its diffs read
    without the collapse limit (`raw_diffs(limits: false)` in GitLab's entity)."""
    data = version_json(mr, version)
    head = commit_json(version.head_sha, mr.title, version.created_at, mr.project, base)
    data["commits"] = [head]
    data["diffs"] = [
        diff_json(f, collapse_chars=None, too_large_chars=too_large_chars) for f in version.files
    ]
    return data


def _position(stored: dict[str, Any]) -> dict[str, Any]:
    """A DiffNote's position as GitLab returns it: every key of the docs' example, the
    line it is not on null, no `line_range` unless one was given."""
    shown: dict[str, Any] = _example("merge_request_diff_discussions", 0, "notes", 0, "position")
    return {key: stored.get(key) for key in shown}


def _note_type(note: FakeNote, discussion: FakeDiscussion) -> str | None:
    if note.position is not None:
        return "DiffNote"
    return None if discussion.individual_note else "DiscussionNote"


def note_json(note: FakeNote, discussion: FakeDiscussion, mr: FakeMr, base: str) -> dict[str, Any]:
    """GitLab's Note entity: the docs' example note, with this note overlaid. Every
    note of an MR but a system note is resolvable; none is resolved here."""
    data: dict[str, Any] = _example("merge_request_discussions", 0, "notes", 0)
    data.update(_example("merge_request_note"))  # confidential, internal
    data.update(id=note.id, type=_note_type(note, discussion), body=note.body)
    data.update(author=user_json(note.author, base), system=note.system)
    data.update(created_at=note.created_at, updated_at=note.created_at)
    data.update(noteable_id=mr_id(mr), project_id=mr.project_id, noteable_iid=mr.iid)
    data["resolvable"] = not note.system
    if note.system:
        for key in ("resolved", "resolved_by", "resolved_at"):
            data.pop(key, None)
    else:
        data.update(resolved=False, resolved_by=None, resolved_at=None)
    if note.position is not None:
        data.update(commit_id=None, position=_position(note.position))
    return data


def discussion_json(discussion: FakeDiscussion, mr: FakeMr, base: str) -> dict[str, Any]:
    notes = [note_json(n, discussion, mr, base) for n in discussion.notes]
    return {"id": discussion.id, "individual_note": discussion.individual_note, "notes": notes}


def notes_newest_first(threads: Sequence[FakeDiscussion]) -> list[tuple[FakeNote, FakeDiscussion]]:
    """Every note with its thread, newest first, as GitLab sorts notes by default."""
    pairs = [(n, d) for d in threads for n in d.notes]
    return sorted(pairs, key=lambda pair: -pair[0].id)
