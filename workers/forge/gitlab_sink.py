"""Posting one review on a GitLab merge request: inline discussions, then one note.

GitLab has no "review" object to post in one request, so a review is several: one
inline discussion per placeable comment, then the summary note, last, which holds the
hidden marker of the MR head (`review_marker`). Every request can be the one a crash,
a timeout or a 502 interrupts, so each carries a marker of its own, and before
posting the sink lists the MR's discussions (plain notes are listed there too) and
skips what reviewq's own account already posted: a summary note found means the
whole review is there; an inline comment found is not posted again. A marker counts
only at the start of a note written by reviewq's account (`[review] gitlab_username`,
else `GET /user`): it is predictable, and anyone could plant it.

Positions come from the MR's latest diff version (its base, start and head SHAs),
and only if that version is the head under review. A comment lands on the new side:
`new_line` alone for an added line, `old_line` too for an unchanged one (GitLab
refuses a context line given one side only). A comment that cannot be placed (no
version at this head, a line not in the diff, or GitLab's 400 for the position) is
folded into the summary note instead.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from scheduler.state.refs import PullRequestRef
from workers.forge.gitlab import (
    GitLabBadRequest,
    GitLabClient,
    GitLabNote,
    MergeRequestVersion,
)
from workers.forge.gitlab_diffs import changed_files
from workers.forge.sinks import PostResult, render_body, review_marker
from workers.review.changes import ChangedFile
from workers.review.model import Review, ReviewComment

__all__ = ["GitLabSink", "comment_marker", "line_pairs"]

log = logging.getLogger(__name__)

_HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@")


def comment_marker(pr: str, head_sha: str, comment: ReviewComment) -> str:
    """The hidden line that identifies one inline comment of one review."""
    key = hashlib.sha1(f"{comment.path}\n{comment.line}\n{comment.body}".encode()).hexdigest()
    return f"<!-- reviewq:comment pr={pr} sha={head_sha} key={key[:16]} -->"


def line_pairs(patch: str) -> dict[int, int | None]:
    """Each new-side line of a patch, with its old-side line when it is unchanged
    context (None for an added line): what a GitLab position needs."""
    pairs: dict[int, int | None] = {}
    old = new = 0
    in_hunk = False
    for line in patch.split("\n"):
        header = _HUNK.match(line)
        if header:
            old, new, in_hunk = int(header[1]), int(header[2]), True
        elif not in_hunk or line.startswith("\\"):
            continue
        elif line.startswith("-"):
            old += 1
        elif line.startswith("+"):
            pairs[new] = None
            new += 1
        elif line.startswith(" ") or line == "":
            pairs[new] = old
            old, new = old + 1, new + 1
    return pairs


class GitLabSink:
    """Posts one review per MR and head commit (see the module doc)."""

    name = "gitlab"

    def __init__(self, client: GitLabClient, *, username: str | None = None) -> None:
        self._client = client
        self._username = username.strip() if username and username.strip() else None

    def post(self, review: Review, ref: PullRequestRef) -> PostResult:
        if review.pr != ref.id:
            raise ValueError(f"review is of {review.pr!r}, not of {ref.id!r}")
        project, iid = _gitlab_target(ref)
        marker = review_marker(ref.id, review.head_sha)
        mine = self._mine(project, iid)
        summary = next((n for n in mine if n.body.startswith(marker)), None)
        if summary is not None:
            log.info(
                "review of %s at %s already posted: note %s", ref.id, review.head_sha, summary.id
            )
            return PostResult(False, True, self._url(project, iid, summary.id))
        posted = {n.body.split("\n", 1)[0] for n in mine}
        folded = self._comments(project, iid, review, ref, posted)
        body = render_body(review, marker, folded, forge="GitLab")
        note = self._client.create_note(project, iid, body=body)
        log.info("posted review of %s at %s: note %s", ref.id, review.head_sha, note.id)
        return PostResult(True, False, self._url(project, iid, note.id), len(folded))

    def username(self) -> str:
        """The account reviewq posts as: the setting, else asked of GitLab once."""
        return self._username or self._client.viewer_username()

    def _mine(self, project: str, iid: int) -> list[GitLabNote]:
        """Every note reviewq's account wrote on the MR, inline or not."""
        me = self.username().casefold()
        return [
            note
            for discussion in self._client.list_discussions(project, iid)
            for note in discussion.notes
            if not note.system and note.author is not None and note.author.casefold() == me
        ]

    def _comments(
        self, project: str, iid: int, review: Review, ref: PullRequestRef, posted: set[str]
    ) -> list[ReviewComment]:
        """Post each comment not posted yet; return the ones folded into the note."""
        if not review.comments:
            return []
        version = self._latest(project, iid, review.head_sha)
        if version is None:
            log.warning(
                "%s: no diff version at %s; comments go in the note", ref.id, review.head_sha
            )
            return list(review.comments)
        files = self._files(project, iid, version)
        folded = []
        for comment in review.comments:
            marker = comment_marker(ref.id, review.head_sha, comment)
            if marker in posted:
                continue
            position = _position(comment, files, version)
            if position is None:
                folded.append(comment)
                continue
            try:
                body = f"{marker}\n\n{comment.body}"
                self._client.create_discussion(project, iid, body=body, position=position)
            except GitLabBadRequest as exc:
                log.warning("%s: %s; the comment goes in the note", ref.id, exc)
                folded.append(comment)
        return folded

    def _latest(self, project: str, iid: int, head_sha: str) -> MergeRequestVersion | None:
        versions = self._client.versions(project, iid)
        if versions and versions[0].head_commit_sha.lower() == head_sha.lower():
            return versions[0]
        return None

    def _files(
        self, project: str, iid: int, version: MergeRequestVersion
    ) -> dict[str, ChangedFile]:
        listing = self._client.list_diffs(project, iid)
        return {f.filename: f for f in changed_files(self._client, project, listing.diffs, version)}

    def _url(self, project: str, iid: int, note_id: int) -> str:
        return f"{self._client.base_url}/{project}/-/merge_requests/{iid}#note_{note_id}"


def _position(
    comment: ReviewComment, files: dict[str, ChangedFile], version: MergeRequestVersion
) -> dict[str, Any] | None:
    file = files.get(comment.path)
    if file is None or file.patch is None or comment.side != "RIGHT":
        return None
    pairs = line_pairs(file.patch)
    if comment.line not in pairs:
        return None
    position: dict[str, Any] = {
        "position_type": "text",
        "base_sha": version.base_commit_sha,
        "start_sha": version.start_commit_sha,
        "head_sha": version.head_commit_sha,
        "old_path": file.previous_filename or file.filename,
        "new_path": file.filename,
        "new_line": comment.line,
    }
    old = pairs[comment.line]
    if old is not None:
        position["old_line"] = old
    start = comment.start_line
    if start is not None and start < comment.line and start in pairs:
        position["line_range"] = _line_range(file, start, comment.line)
    return position


def _line_range(file: ChangedFile, start: int, end: int) -> dict[str, Any]:
    """A range position's ends as GitLab names them: each by its `line_code`
    (`sha1(path)_<old>_<new>`), its type (`new` for an added line, None for context)
    and its line numbers. An added line's old number is where it sits on the old side."""
    rows = _rows(file.patch or "")
    digest = hashlib.sha1(file.filename.encode()).hexdigest()

    def end_of(new: int) -> dict[str, Any]:
        old, added = rows[new]
        return {
            "line_code": f"{digest}_{old}_{new}",
            "type": "new" if added else None,
            "old_line": None if added else old,
            "new_line": new,
        }

    return {"start": end_of(start), "end": end_of(end)}


def _rows(patch: str) -> dict[int, tuple[int, bool]]:
    """Each new-side line: the old-side counter at it, and whether it was added."""
    rows: dict[int, tuple[int, bool]] = {}
    old = new = 0
    for line in patch.split("\n"):
        if header := _HUNK.match(line):
            old, new = int(header[1]), int(header[2])
        elif line.startswith("+"):
            rows[new] = (old, True)
            new += 1
        elif line.startswith("-"):
            old += 1
        elif line.startswith(" ") or line == "":
            rows[new] = (old, False)
            old, new = old + 1, new + 1
    return rows


def _gitlab_target(ref: PullRequestRef) -> tuple[str, int]:
    if ref.forge != "gitlab" or not ref.owner or not ref.repo or ref.number is None:
        raise ValueError(f"{ref.id!r} is not a GitLab merge request with a project and iid")
    return f"{ref.owner}/{ref.repo}", ref.number
