"""The fake GitLab's `GET /projects/:id/repository/compare?from=&to=&straight=`.

A commit the fake knows is the head of some diff version of a project's MR. With
`straight=true` GitLab diffs the two trees directly: here, the files whose content
differs between the two versions (a file a version does not list has its base's
content). Without it GitLab diffs from the merge base; the fake, which keeps no
history beyond versions, answers the `to` version's own diffs (from its base). The
`compare_timeout` fault answers as GitLab does when it gives up on a big comparison:
no diffs, and the flag set.
"""

from __future__ import annotations

import hashlib
from typing import Any

from scheduler.sandbox.gitlab import shapes
from scheduler.sandbox.gitlab.state import FakeGitLab, FakeMr, FakeVersion, MrFile

__all__ = ["compare_json"]

_BASE = "base"


def _find(gl: FakeGitLab, project: str, sha: str) -> tuple[FakeMr, FakeVersion] | None:
    for (name, _), mr in gl.mrs.items():
        if name != project:
            continue
        for version in mr.versions:
            if version.head_sha == sha or (len(sha) >= 7 and version.head_sha.startswith(sha)):
                return mr, version
    return None


def _content(version: FakeVersion, path: str) -> str | None:
    """A fingerprint of the path's content at the version's head (None: not there)."""
    for f in version.files:
        if f.new_path == path and not f.deleted_file:
            text = f.new_content if f.new_content is not None else f"diff:{f.diff}"
            return hashlib.sha1(text.encode()).hexdigest()
        if f.old_path == path and (f.deleted_file or f.renamed_file):
            return None
    if path in version.repo_files:
        return hashlib.sha1(version.repo_files[path].encode()).hexdigest()
    return _BASE


def _paths(version: FakeVersion) -> set[str]:
    return (
        {f.new_path for f in version.files}
        | {f.old_path for f in version.files}
        | set(version.repo_files)
    )


def _straight(old: FakeVersion, new: FakeVersion) -> list[MrFile]:
    """One diff entry per path whose content differs; the new side's diff when the new
    version lists the file (the fake keeps no other text)."""
    out = []
    for path in sorted(_paths(old) | _paths(new)):
        before, after = _content(old, path), _content(new, path)
        if before == after:
            continue
        listed = next((f for f in new.files if f.new_path == path), None)
        out.append(
            listed
            or MrFile(
                old_path=path,
                new_path=path,
                diff="",
                new_file=before is None,
                deleted_file=after is None,
            )
        )
    return out


def compare_json(
    gl: FakeGitLab, project: str, base: str, old: str, new: str, *, straight: bool
) -> dict[str, Any] | None:
    """GitLab's Compare entity; None when either commit is unknown (GitLab's 404)."""
    found_old, found_new = _find(gl, project, old), _find(gl, project, new)
    if found_old is None or found_new is None:
        return None
    mr, head = found_new
    timeout = gl.take("compare_timeout")
    files = [] if timeout else _straight(found_old[1], head) if straight else list(head.files)
    limit = gl.config.too_large_chars
    commit = shapes.commit_json(head.head_sha, mr.title, head.created_at, project, base)
    return {
        "commit": commit,
        "commits": [] if head.head_sha == found_old[1].head_sha else [commit],
        "diffs": [shapes.diff_json(f, collapse_chars=None, too_large_chars=limit) for f in files],
        "compare_timeout": timeout,
        "compare_same_ref": head.head_sha == found_old[1].head_sha,
        "web_url": f"{base}/{project}/-/compare/{old}...{new}",
    }
