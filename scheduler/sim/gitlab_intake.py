"""`reviewq demo --forge gitlab` and the chaos suite's GitLab runs: merge requests on
the fake GitLab, arriving as GitLab sends them (`Merge Request Hook` deliveries with
`X-Gitlab-Token` and an `Idempotency-Key`) at a `reviewq serve` process.

A scenario's PR ids are GitLab's here (`group/sub/project!iid`); `gitlab_scenario`
turns a GitHub-style scenario into one. Along the way the intake sends what a real
endpoint also gets: a redelivery, a label edit (an update without commits), a draft,
and a wrong token. The reviews it reads back are the summary notes on the fake
GitLab, one row per note in the shape the chaos invariants count (`pr`, `commit_id`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
import uuid
from collections import Counter
from typing import Any

import httpx

from scheduler.sandbox.gitlab import DEV_GITLAB_TOKEN, FakeGitLabServer, MrFile, serve_fake_gitlab
from scheduler.sim.demo import _outcome, _webhook_server
from scheduler.sim.run import SimRun
from scheduler.sim.scenario import PrSpec, Scenario
from scheduler.sim.simulate import synthetic_diff
from workers.review.diff import parse_unified_diff
from workers.runtime import RuntimeSpec

__all__ = ["GitLabWebhookIntake", "gitlab_id", "gitlab_scenario"]

_TOKEN_ENV = "REVIEWQ_DEMO_GITLAB_WEBHOOK_TOKEN"
_API_TOKEN_ENV = "REVIEWQ_DEMO_GITLAB_TOKEN"
_MARKER = re.compile(r"^<!-- reviewq:review pr=(\S+) sha=([0-9a-f]+) -->")


def gitlab_id(pr_id: str) -> str:
    """`acme/api#3` as a merge request in a nested group: `acme/platform/api!3`."""
    if "!" in pr_id:
        return pr_id
    path, _, number = pr_id.partition("#")
    group, _, project = path.rpartition("/")
    return f"{group or 'acme'}/platform/{project}!{number}"


def gitlab_scenario(scenario: Scenario) -> Scenario:
    """The same PRs, at the same times, named as GitLab merge requests."""
    prs = [pr.model_copy(update={"id": gitlab_id(pr.id)}) for pr in scenario.all_prs()]
    return scenario.model_copy(update={"prs": tuple(prs), "generators": ()})


def _mr_files(pr: PrSpec, run: SimRun) -> list[MrFile]:
    files = parse_unified_diff(synthetic_diff(pr, run.scenario.line_chars))
    return [
        MrFile(
            old_path=f.previous_filename or f.filename,
            new_path=f.filename,
            diff=f.patch or "",
            new_file=f.status == "added",
            deleted_file=f.status == "removed",
            new_content=_added_text(f.patch) if f.status == "added" else None,
        )
        for f in files
    ]


def _added_text(patch: str | None) -> str:
    """A new file's content, from its patch: what the raw-file route serves when GitLab
    collapses the diff (the big PR's files are over the collapse limit)."""
    lines = (patch or "").split("\n")
    return "".join(line[1:] + "\n" for line in lines if line.startswith("+"))


@dataclasses.dataclass
class GitLabWebhookIntake:
    """Delivers each MR as GitLab would (see the module doc)."""

    token: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    outcomes: Counter[str] = dataclasses.field(default_factory=Counter)
    gitlab: FakeGitLabServer | None = None
    url: str = ""
    last_reviews: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def control(self) -> Any:
        assert self.gitlab is not None
        return self.gitlab.control

    def prepare(self, stack: contextlib.ExitStack, spec: RuntimeSpec) -> RuntimeSpec:
        self.gitlab = stack.enter_context(serve_fake_gitlab())
        stack.callback(self._collect)  # runs before the fake GitLab stops
        hook = spec.settings.webhook.model_copy(
            update={"gitlab_token_env": _TOKEN_ENV, "repositories": ("acme/*",)}
        )
        settings = spec.settings.model_copy(update={"webhook": hook})
        self.url = stack.enter_context(_webhook_server(settings, {_TOKEN_ENV: self.token}))
        return dataclasses.replace(
            spec,
            sink="forge",
            gitlab_url=self.gitlab.url,
            gitlab_token_env=_API_TOKEN_ENV,
            env={**(spec.env or {}), _API_TOKEN_ENV: DEV_GITLAB_TOKEN},
        )

    def deliver(self, run: SimRun, pr: PrSpec) -> None:
        project, _, iid_text = pr.id.partition("!")
        iid, sha = int(iid_text), hashlib.sha1(pr.id.encode()).hexdigest()
        self.control.add_mr(project, iid, sha, files=_mr_files(pr, run))
        delivery = self._send(_event("open", project, iid, sha))
        if iid == 2:
            self._send(_event("open", project, iid, sha), delivery=delivery)  # redelivered
        if iid == 3:
            self._send(_event("open", project, iid, sha), token="not-the-token")
            labels = {"labels": {"previous": [], "current": [{"title": "backend"}]}}
            self._send(_event("update", project, iid, sha, changes=labels))
            self._send(_event("open", f"{project}-drafts", iid, sha, draft=True))

    def reviews(self) -> list[dict[str, Any]]:
        """Each summary note, as the MR and head it reviews, with that head's threads."""
        notes = self.control.notes()
        rows = []
        for note in notes:
            found = _MARKER.match(note["body"])
            if found is None or note["position"] is not None:
                continue
            pr, sha = found.groups()
            threads = [
                n for n in notes if n["mr"] == pr and (n["position"] or {}).get("head_sha") == sha
            ]
            rows.append({"pr": pr, "commit_id": sha, "body": note["body"], "comments": threads})
        return rows

    def _collect(self) -> None:
        if self.gitlab is not None:
            self.last_reviews = self.reviews()

    def _send(
        self, body: dict[str, Any], *, delivery: str | None = None, token: str | None = None
    ) -> str:
        delivery = delivery or str(uuid.uuid4())
        headers = {
            "Content-Type": "application/json",
            "X-Gitlab-Event": "Merge Request Hook",
            "X-Gitlab-Token": token or self.token,
            "Idempotency-Key": delivery,
        }
        response = httpx.post(
            f"{self.url}/webhooks/gitlab", content=json.dumps(body), headers=headers
        )
        self.outcomes[_outcome(response)] += 1
        return delivery


def _event(
    action: str,
    project: str,
    iid: int,
    sha: str,
    *,
    draft: bool = False,
    changes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The fields of GitLab's merge request event that a handler reads."""
    return {
        "object_kind": "merge_request",
        "event_type": "merge_request",
        "project": {"id": 1, "path_with_namespace": project},
        "object_attributes": {
            "iid": iid,
            "action": action,
            "state": "opened",
            "draft": draft,
            "work_in_progress": draft,
            "title": ("Draft: " if draft else "") + f"{project}!{iid}",
            "last_commit": {"id": sha, "message": "change"},
            "source_project_id": 1,
            "target_project_id": 1,
        },
        "changes": changes or {},
    }
