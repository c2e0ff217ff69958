"""Where a plan's files come from: a local diff, or the forge (GitHub, GitLab) after a
check of the PR.

The check runs before anything is listed, and so before any provider call: a webhook
can be replayed, and a PR can close, turn draft or move on while its plan job waits
in the queue. A PR that is not open at the head to be reviewed gets nothing spent on it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scheduler.state.refs import PullRequestRef
from workers.forge.github import GitHubClient, GitHubNotFound, PullRequestInfo
from workers.forge.gitlab import GitLabClient, GitLabNotFound, MergeRequestInfo
from workers.forge.gitlab_diffs import changed_files as gitlab_changed_files
from workers.incremental import Compared
from workers.review.changes import ChangedFile
from workers.review.diff import parse_unified_diff
from workers.runtime import Runtime

__all__ = ["GITATTRIBUTES", "HEAD_CHECKS", "Fetched", "HeadMoved", "changed_files", "fetch"]

log = logging.getLogger(__name__)

# GitHub may answer for a PR a moment before a push shows in it: a head that differs is
# looked at again this many times (after the retry backoff) before the plan gives up.
HEAD_CHECKS = 2
# The file whose `linguist-generated`, `linguist-vendored` and `-diff` attributes the
# skip rules honour, read from the head commit once per plan.
GITATTRIBUTES = ".gitattributes"
# Earlier heads a GitLab plan compares the new head with at most; files last matched
# at an older one are reviewed again.
MAX_COMPARES = 3


@dataclass(frozen=True, slots=True)
class Fetched:
    """What a plan reads from its source: the PR's files, the text of the head's
    `.gitattributes` (None: none, or not a forge PR), and for each earlier head asked
    about, what changed from it to this head (`workers.incremental.Compared`)."""

    files: list[ChangedFile]
    gitattributes: str | None = None
    compared: dict[str, Compared] = field(default_factory=dict)
    # The PR's title and description, which the review prompt quotes (docs/prompt.md).
    title: str = ""
    description: str = ""


class HeadMoved(Exception):
    """The forge says the PR is not open at this head. `final`: closed or a draft, so
    looking again cannot help; otherwise GitHub may not have caught up with a push."""

    def __init__(self, reason: str, *, final: bool) -> None:
        super().__init__(reason)
        self.reason, self.final = reason, final


def changed_files(rt: Runtime, ref: PullRequestRef, source: dict[str, Any]) -> list[ChangedFile]:
    """The PR's files from `source` (see `fetch`), without anything else."""
    return fetch(rt, ref, source).files


def fetch(
    rt: Runtime, ref: PullRequestRef, source: dict[str, Any], earlier: Sequence[str] = ()
) -> Fetched:
    """The PR's files from `source`: `{"kind": "diff", "text": ...}`, `{"kind":
    "github"}` or `{"kind": "gitlab", ...}`; from a forge also its `.gitattributes` and
    what changed since each of the `earlier` heads. Raises `HeadMoved`, or the forge
    client's errors when it cannot answer for now (the caller schedules a retry)."""
    kind = source.get("kind")
    if kind == "diff":
        return Fetched(parse_unified_diff(str(source.get("text", ""))))
    if kind == "github":
        return _github(rt, ref, earlier)
    if kind == "gitlab":
        return _gitlab(rt, ref, earlier)
    raise ValueError(f"unknown PR source kind {kind!r}; expected 'github', 'gitlab' or 'diff'")


def _github(rt: Runtime, ref: PullRequestRef, earlier: Sequence[str]) -> Fetched:
    """Files by blob: so only the newest reviewed head is compared, which says whether
    the history diverged and vouches for a file GitHub lists without a blob."""
    if not (ref.owner and ref.repo and ref.number):
        raise ValueError(f"{ref.id}: a GitHub source needs owner, repo and number")
    client = GitHubClient(rt.github_token(), base_url=rt.spec.github_url)
    owner, repo, cap = ref.owner, ref.repo, rt.spec.planning.gitattributes_max_bytes
    try:
        info = client.pull_request(owner, repo, ref.number)
        _check_head(info, ref)
        listing = client.list_files(owner, repo, ref.number)
        text = client.file_text(owner, repo, GITATTRIBUTES, ref.head_sha, max_bytes=cap)
        compared = {h: _github_compare(client, ref, h) for h in earlier[:1]}
    finally:
        client.close()
    if listing.truncated:
        log.warning("%s: GitHub lists at most 3,000 files; reviewing those", ref.id)
    return Fetched(list(listing.files), text, compared, info.title, info.body or "")


def _github_compare(client: GitHubClient, ref: PullRequestRef, old: str) -> Compared:
    """`old...head`: when `old` is an ancestor its file list is exactly what changed;
    otherwise (a force push, a rebase) it is measured from a merge base, so only the
    blobs can tell. A commit GitHub no longer has is a rewritten history too."""
    assert ref.owner and ref.repo
    try:
        found = client.compare(ref.owner, ref.repo, old, ref.head_sha)
    except GitHubNotFound:
        return Compared(None, diverged=True)
    if found.status not in ("ahead", "identical"):
        return Compared(None, diverged=True)
    if not found.complete:
        return Compared(None, diverged=False)
    names = {f.filename for f in found.files} | {
        f.previous_filename for f in found.files if f.previous_filename
    }
    return Compared(frozenset(names), diverged=False)


def _check_head(info: PullRequestInfo, ref: PullRequestRef) -> None:
    """The PR as its forge reports it now must be open, ready for review, and at the
    head to be reviewed."""
    if info.state != "open":
        raise HeadMoved(f"the pull request is {info.state} on GitHub", final=True)
    if info.draft:
        raise HeadMoved("the pull request is a draft on GitHub", final=True)
    if info.head_sha.lower() != ref.head_sha:
        raise HeadMoved(f"GitHub's head is {info.head_sha[:12]}", final=False)


def _gitlab(rt: Runtime, ref: PullRequestRef, earlier: Sequence[str]) -> Fetched:
    """The MR's latest diff, after the same check as a GitHub PR's; files GitLab
    collapsed are fetched from the diff version's two commits (`gitlab_diffs`). GitLab's
    diffs name no blobs, so each earlier head is compared with this one directly."""
    if not (ref.owner and ref.repo and ref.number):
        raise ValueError(f"{ref.id}: a GitLab source needs its project path and iid")
    project, iid = f"{ref.owner}/{ref.repo}", ref.number
    client = rt.gitlab_client()
    try:
        info = client.merge_request(project, iid)
        _check_mr(info, ref)
        versions = client.versions(project, iid)
        version = versions[0] if versions else None
        if version is not None and version.head_commit_sha.lower() != ref.head_sha:
            head = version.head_commit_sha[:12]
            raise HeadMoved(f"GitLab's latest diff version is at {head}", final=False)
        listing = client.list_diffs(project, iid)
        files = gitlab_changed_files(client, project, listing.diffs, version)
        text = _gitlab_attributes(client, project, ref.head_sha, rt)
        compared = {h: _gitlab_compare(client, project, h, ref) for h in earlier[:MAX_COMPARES]}
    finally:
        client.close()
    if listing.truncated:
        log.warning("%s: GitLab listed more files than reviewq reads; reviewing those", ref.id)
    return Fetched(files, text, compared, info.title, info.description or "")


def _gitlab_attributes(client: GitLabClient, project: str, head: str, rt: Runtime) -> str | None:
    cap = rt.spec.planning.gitattributes_max_bytes
    try:
        raw = client.raw_file(project, GITATTRIBUTES, head, max_bytes=cap)
    except GitLabNotFound:
        return None
    try:
        return None if raw is None else raw.decode()
    except UnicodeDecodeError:
        return None


def _gitlab_compare(client: GitLabClient, project: str, old: str, ref: PullRequestRef) -> Compared:
    """A direct comparison of the two trees: right across a rewritten history."""
    try:
        found = client.compare(project, old, ref.head_sha)
    except GitLabNotFound:
        return Compared(None)
    if found.compare_timeout:
        return Compared(None)
    names = {d.new_path for d in found.diffs} | {d.old_path for d in found.diffs}
    return Compared(frozenset(names))


def _check_mr(info: MergeRequestInfo, ref: PullRequestRef) -> None:
    """As `_check_head`, for GitLab's words: `opened`, not a draft, at this head."""
    if info.state != "opened":
        raise HeadMoved(f"the merge request is {info.state} on GitLab", final=True)
    if info.is_draft:
        raise HeadMoved("the merge request is a draft on GitLab", final=True)
    if (info.sha or "").lower() != ref.head_sha:
        raise HeadMoved(f"GitLab's head is {(info.sha or '?')[:12]}", final=False)
