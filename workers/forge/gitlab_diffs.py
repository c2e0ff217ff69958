"""An MR's files as planning reads them: GitLab's diffs turned into `ChangedFile`s.

GitLab leaves a file's `diff` empty in two cases, and the API has no endpoint that
gives one file's diff back (gitlab-org/gitlab#414389):
- `collapsed`: the file's diff is over a tenth of the instance's diff limits (about
  20 kB on gitlab.com). It is fetched another way: the file's content at the
  version's base and head commits (`repository/files/:path/raw`), diffed here into
  the same hunks GitLab would show, up to `max_fetch_bytes` per side.
- `too_large`: over the limits themselves. It is not fetched (a file GitLab will not
  even show is not worth a review's budget) and is listed with that reason.
A file GitLab marks `generated_file` is listed as generated, as a reviewer would
skip it in GitLab's own view.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence

from workers.forge.gitlab import GitLabClient, GitLabDiff, GitLabNotFound, MergeRequestVersion
from workers.review.changes import ChangedFile, FileStatus

__all__ = ["DEFAULT_MAX_FETCH_BYTES", "changed_files", "to_changed_file"]

log = logging.getLogger(__name__)

DEFAULT_MAX_FETCH_BYTES = 1_000_000
TOO_LARGE = "diff too large for GitLab (over the instance's diff limits): not reviewed"
GENERATED = "generated (GitLab marks it generated_file)"


def changed_files(
    client: GitLabClient,
    project: str,
    diffs: Sequence[GitLabDiff],
    version: MergeRequestVersion | None,
    *,
    max_fetch_bytes: int = DEFAULT_MAX_FETCH_BYTES,
) -> list[ChangedFile]:
    """Every diff as a `ChangedFile`; collapsed ones fetched from `version`'s commits."""
    files = []
    for diff in diffs:
        file = to_changed_file(diff)
        if file.patch is None and file.withheld is None and diff.collapsed:
            file = _fetched(client, project, diff, version, max_fetch_bytes)
        files.append(file)
    return files


def to_changed_file(diff: GitLabDiff) -> ChangedFile:
    """One diff as GitLab listed it, without fetching anything."""
    status = _status(diff)
    withheld = None
    if diff.too_large and not diff.diff:
        withheld = TOO_LARGE
    elif diff.generated_file:
        withheld = GENERATED
    patch = diff.diff if "@@" in diff.diff[:200] else None
    return _file(diff, status, patch, withheld)


def _status(diff: GitLabDiff) -> FileStatus:
    if diff.new_file:
        return "added"
    if diff.deleted_file:
        return "removed"
    return "renamed" if diff.renamed_file else "modified"


def _file(
    diff: GitLabDiff, status: FileStatus, patch: str | None, withheld: str | None
) -> ChangedFile:
    lines = (patch or "").split("\n")
    added = sum(1 for line in lines if line.startswith("+"))
    removed = sum(1 for line in lines if line.startswith("-"))
    return ChangedFile(
        filename=diff.new_path,
        status=status,
        additions=added,
        deletions=removed,
        changes=added + removed,
        patch=patch,
        previous_filename=diff.old_path if diff.renamed_file else None,
        withheld=withheld,
    )


def _fetched(
    client: GitLabClient,
    project: str,
    diff: GitLabDiff,
    version: MergeRequestVersion | None,
    max_bytes: int,
) -> ChangedFile:
    """A collapsed file, diffed here from its two sides; or listed with why not."""
    status = _status(diff)
    if version is None:
        return _file(diff, status, None, "collapsed by GitLab, and no diff version to fetch")
    try:
        base, head = version.base_commit_sha, version.head_commit_sha
        old = (
            b""
            if diff.new_file
            else client.raw_file(project, diff.old_path, base, max_bytes=max_bytes)
        )
        new = (
            b""
            if diff.deleted_file
            else client.raw_file(project, diff.new_path, head, max_bytes=max_bytes)
        )
    except GitLabNotFound as exc:
        return _file(diff, status, None, f"collapsed by GitLab, and not fetched: {exc}")
    if old is None or new is None:
        why = f"collapsed by GitLab, and larger than {max_bytes} bytes to fetch"
        return _file(diff, status, None, why)
    texts = _texts(old, new)
    if texts is None:
        return _file(diff, status, None, "binary (collapsed by GitLab)")
    patch = _unified(*texts)
    if patch is None:
        return _file(diff, status, None, "no content changes (collapsed by GitLab)")
    log.info("%s: %s was collapsed by GitLab; diffed from its two sides", project, diff.new_path)
    return _file(diff, status, patch, None)


def _texts(old: bytes, new: bytes) -> tuple[str, str] | None:
    if b"\0" in old or b"\0" in new:
        return None
    try:
        return old.decode(), new.decode()
    except UnicodeDecodeError:
        return None


def _unified(old: str, new: str) -> str | None:
    """Hunks only (from the first `@@`), as GitLab's `diff` field holds them."""
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=3)
    body = [line for n, line in enumerate(lines) if n >= 2]  # drop the ---/+++ header
    return "\n".join(body) + "\n" if body else None
