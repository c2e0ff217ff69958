"""Real webhook payloads (tests/fixtures/webhooks, see SOURCES.md there), loaded as
copies a test may change: which fields a test rewrites is named by these helpers'
arguments, and the files themselves are never edited."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "webhooks"


@cache
def _load(relative: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / relative).read_text())
    return data


def gitlab_fixture(
    name: str,
    *,
    project: str | None = None,
    iid: int | None = None,
    sha: str | None = None,
    state: str | None = None,
    oldrev: str | None = None,
    draft: bool | None = None,
    changes: dict[str, Any] | None = None,
    updated_at: str | None = None,
) -> dict[str, Any]:
    """A copy of `gitlab/woodpecker-HookPullRequest<name>.json` (or `go-gitlab-...` when
    `name` is `go-gitlab`), with the named fields rewritten: `project` and `iid` make
    events of different MRs one MR's history, `sha` its last commit, `draft` both of
    GitLab's draft flags, `changes` replaces the `changes` object, `updated_at` makes a
    repeat of one event (a second close) a body of its own, as GitLab's would be."""
    relative = (
        "gitlab/go-gitlab-merge_request.json"
        if name == "go-gitlab"
        else f"gitlab/woodpecker-HookPullRequest{name}.json"
    )
    data = copy.deepcopy(_load(relative))
    attrs = data["object_attributes"]
    if project is not None:
        data["project"]["path_with_namespace"] = project
    if iid is not None:
        attrs["iid"] = iid
    if sha is not None:
        attrs["last_commit"]["id"] = sha
    if state is not None:
        attrs["state"] = state
    if oldrev is not None:
        attrs["oldrev"] = oldrev
    if draft is not None:
        attrs["draft"] = attrs["work_in_progress"] = draft
    if changes is not None:
        data["changes"] = changes
    if updated_at is not None:  # a later delivery of the same event is another body
        attrs["updated_at"] = updated_at
    return data


def github_fixture(
    action: str, *, sha: str | None = None, state: str | None = None, updated_at: str | None = None
) -> dict[str, Any]:
    """A copy of `github/octokit-<action>.payload.json`, with the head SHA or the PR's
    state rewritten (octokit's examples all share one head)."""
    data = copy.deepcopy(_load(f"github/octokit-{action}.payload.json"))
    if sha is not None:
        data["pull_request"]["head"]["sha"] = sha
    if state is not None:
        data["pull_request"]["state"] = state
    if updated_at is not None:
        data["pull_request"]["updated_at"] = updated_at
    return data


def gitlab_fixture_names() -> list[str]:
    names = sorted(p.name for p in (FIXTURES / "gitlab").glob("woodpecker-*.json"))
    return [n.removeprefix("woodpecker-HookPullRequest").removesuffix(".json") for n in names]


def github_fixture_actions() -> list[str]:
    names = sorted(p.name for p in (FIXTURES / "github").glob("octokit-*.json"))
    return [n.removeprefix("octokit-").removesuffix(".payload.json") for n in names]
