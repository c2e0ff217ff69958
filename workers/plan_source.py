"""Where a plan's files come from: a local diff, or the forge (GitHub, GitLab) after a
check of the PR.

The check runs before anything is listed, and so before any provider call: a webhook
can be replayed, and a PR can close, turn draft or move on while its plan job waits
in the queue. A PR that is not open at the head to be reviewed gets nothing spent on it.
"""

from __future__ import annotations

import logging
from typing import Any

from scheduler.state.refs import PullRequestRef
from workers.forge.github import GitHubClient, PullRequestInfo
from workers.forge.gitlab import MergeRequestInfo
from workers.forge.gitlab_diffs import changed_files as gitlab_changed_files
from workers.review.changes import ChangedFile
from workers.review.diff import parse_unified_diff
from workers.runtime import Runtime

__all__ = ["HEAD_CHECKS", "HeadMoved", "changed_files"]

log = logging.getLogger(__name__)

# GitHub may answer for a PR a moment before a push shows in it: a head that differs is
# looked at again this many times (after the retry backoff) before the plan gives up.
HEAD_CHECKS = 2


class HeadMoved(Exception):
    """The forge says the PR is not open at this head. `final`: closed or a draft, so
    looking again cannot help; otherwise GitHub may not have caught up with a push."""

    def __init__(self, reason: str, *, final: bool) -> None:
        super().__init__(reason)
        self.reason, self.final = reason, final


def changed_files(rt: Runtime, ref: PullRequestRef, source: dict[str, Any]) -> list[ChangedFile]:
    """The PR's files from `source`: `{"kind": "diff", "text": ...}` or `{"kind":
    "github"}`. Raises `HeadMoved`, or the GitHub client's errors when it cannot answer
    for now (the caller schedules a retry)."""
    kind = source.get("kind")
    if kind == "diff":
        return parse_unified_diff(str(source.get("text", "")))
    if kind == "github":
        return _github_files(rt, ref)
    if kind == "gitlab":
        return _gitlab_files(rt, ref)
    raise ValueError(f"unknown PR source kind {kind!r}; expected 'github', 'gitlab' or 'diff'")


def _github_files(rt: Runtime, ref: PullRequestRef) -> list[ChangedFile]:
    if not (ref.owner and ref.repo and ref.number):
        raise ValueError(f"{ref.id}: a GitHub source needs owner, repo and number")
    client = GitHubClient(rt.github_token(), base_url=rt.spec.github_url)
    try:
        _check_head(client.pull_request(ref.owner, ref.repo, ref.number), ref)
        listing = client.list_files(ref.owner, ref.repo, ref.number)
    finally:
        client.close()
    if listing.truncated:
        log.warning("%s: GitHub lists at most 3,000 files; reviewing those", ref.id)
    return list(listing.files)


def _check_head(info: PullRequestInfo, ref: PullRequestRef) -> None:
    """The PR as its forge reports it now must be open, ready for review, and at the
    head to be reviewed."""
    if info.state != "open":
        raise HeadMoved(f"the pull request is {info.state} on GitHub", final=True)
    if info.draft:
        raise HeadMoved("the pull request is a draft on GitHub", final=True)
    if info.head_sha.lower() != ref.head_sha:
        raise HeadMoved(f"GitHub's head is {info.head_sha[:12]}", final=False)


def _gitlab_files(rt: Runtime, ref: PullRequestRef) -> list[ChangedFile]:
    """The MR's latest diff, after the same check as a GitHub PR's; files GitLab
    collapsed are fetched from the diff version's two commits (`gitlab_diffs`)."""
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
    finally:
        client.close()
    if listing.truncated:
        log.warning("%s: GitLab listed more files than reviewq reads; reviewing those", ref.id)
    return files


def _check_mr(info: MergeRequestInfo, ref: PullRequestRef) -> None:
    """As `_check_head`, for GitLab's words: `opened`, not a draft, at this head."""
    if info.state != "opened":
        raise HeadMoved(f"the merge request is {info.state} on GitLab", final=True)
    if info.is_draft:
        raise HeadMoved("the merge request is a draft on GitLab", final=True)
    if (info.sha or "").lower() != ref.head_sha:
        raise HeadMoved(f"GitLab's head is {(info.sha or '?')[:12]}", final=False)
