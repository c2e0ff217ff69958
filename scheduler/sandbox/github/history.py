"""The fake GitHub's commits: each head a PR has had, its parent, its files' blobs, and
the other files of the repository at it, so it can answer "compare two commits" and
"get repository content" as GitHub would.

A head pushed on top of the previous one has it as parent; a force push starts a
new line from the PR's base. A file's blob at a commit is the blob its PR listing
shows there (`blob_of`); a file the PR did not change at that commit has the base's
content, which the fake names `BASE_BLOB`. The fake keeps no file contents beyond a
PR's patches and what a test puts in `contents`, which is all reviewq reads.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from workers.review.changes import ChangedFile

__all__ = ["BASE_BLOB", "Commit", "Comparison", "History", "blob_of"]

BASE_BLOB = "base"
Repo = tuple[str, str]


def blob_of(file: ChangedFile) -> str:
    """The blob id the fake lists for a file: the one a test gave, else a digest of
    its name and patch (the same patch on the same base is the same content)."""
    if file.sha:
        return file.sha.lower()
    return hashlib.sha1(f"{file.filename}\0{file.patch}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Commit:
    sha: str
    parent: str | None
    files: dict[str, ChangedFile]
    contents: dict[str, str] = field(default_factory=dict)

    def blob(self, path: str) -> str | None:
        """The path's blob here: the PR's, the base's, or None (not in the tree)."""
        file = self.files.get(path)
        if file is None:
            return BASE_BLOB
        return None if file.status == "removed" else blob_of(file)


@dataclass(frozen=True, slots=True)
class Comparison:
    """`base...head`: how they relate, the merge base, and the files that changed from
    the merge base to head (from the PR's base when the lines share no commit)."""

    status: str
    ahead_by: int
    behind_by: int
    merge_base: str | None
    commits: tuple[str, ...]
    files: tuple[ChangedFile, ...]


class History:
    """Every repository's commits, by sha."""

    def __init__(self) -> None:
        self.commits: dict[Repo, dict[str, Commit]] = {}

    def push(
        self,
        repo: Repo,
        sha: str,
        parent: str | None,
        files: tuple[ChangedFile, ...],
        contents: dict[str, str],
    ) -> None:
        self.commits.setdefault(repo, {})[sha] = Commit(
            sha, parent, {f.filename: f for f in files}, dict(contents)
        )

    def get(self, repo: Repo, sha: str) -> Commit | None:
        """A commit by its full sha or an unambiguous prefix of at least 7, as GitHub."""
        known = self.commits.get(repo, {})
        if sha in known:
            return known[sha]
        found = [c for s, c in known.items() if len(sha) >= 7 and s.startswith(sha)]
        return found[0] if len(found) == 1 else None

    def line(self, repo: Repo, sha: str) -> list[str]:
        """`sha` and its ancestors, newest first (the PR's base is not listed)."""
        out: list[str] = []
        commit = self.get(repo, sha)
        while commit is not None and commit.sha not in out:
            out.append(commit.sha)
            commit = self.get(repo, commit.parent) if commit.parent else None
        return out

    def compare(self, repo: Repo, base: str, head: str) -> Comparison | None:
        """None when either commit is unknown (GitHub answers 404)."""
        old, new = self.get(repo, base), self.get(repo, head)
        if old is None or new is None:
            return None
        old_line, new_line = self.line(repo, old.sha), self.line(repo, new.sha)
        merge = next((s for s in new_line if s in old_line), None)
        ahead = new_line[: new_line.index(merge)] if merge else new_line
        behind = old_line[: old_line.index(merge)] if merge else old_line
        status = (
            "identical"
            if not ahead and not behind
            else "ahead"
            if not behind
            else "behind"
            if not ahead
            else "diverged"
        )
        start = self.get(repo, merge) if merge else None
        return Comparison(
            status, len(ahead), len(behind), merge, tuple(reversed(ahead)), _changed(start, new)
        )


def _changed(start: Commit | None, end: Commit) -> tuple[ChangedFile, ...]:
    """Files whose blob differs from `start` (None: the PR's base) to `end`, in
    GitHub's diff-entry terms; the patch is the PR's when the file is in `end`'s."""
    if start is None:
        return tuple(end.files.values())
    out = []
    for path in sorted(set(start.files) | set(end.files)):
        before, after = start.blob(path), end.blob(path)
        if before == after:
            continue
        listed = end.files.get(path)
        if after is None:
            out.append(ChangedFile(filename=path, status="removed"))
        elif listed is None:  # back to the base's content
            out.append(ChangedFile(filename=path, status="modified"))
        else:
            status = "added" if before is None else "modified"
            out.append(listed.model_copy(update={"status": status, "sha": blob_of(listed)}))
    return tuple(out)
