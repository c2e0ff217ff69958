"""Chaos 5b: GitLab misbehaves while merge requests are listed and reviews are posted.

The PRs are merge requests in nested groups on the fake GitLab, delivered as GitLab
sends them. GitLab's faults are fired at them:
- 429s with `Retry-After`, then 429s with only `RateLimit-Reset`, on the next calls
  whatever they are (a plan's look at the MR, its diffs, the sink's listings and posts);
- a burst of 502s before anything was done;
- a 502 after an inline thread was stored, and one after a summary note was stored.

Every review is posted once, later: never lost, never twice (one summary note per MR
head: the note a 502 hid is found by its marker).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from harness import Chaos, Fault, base_scenario, check_invariants, run_chaos

from scheduler.sandbox.localredis import LocalRedis

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

NOTES = "POST /projects/:id/merge_requests/:iid/notes"


def _faults(**changes: Any) -> Any:
    def action(chaos: Chaos) -> dict[str, Any]:
        chaos.gitlab.faults(**changes)
        return changes

    return action


def test_gitlab_rate_limits_and_5xx_post_one_note_per_merge_request_head(
    chaos_redis: LocalRedis, tmp_path: Path, chaos_run: int
) -> None:
    scenario = base_scenario(
        prs=[{"id": "acme/mono#100", "at": "10m", "files": 40, "lines_per_file": 300}]
    )
    s = scenario.time_scale
    faults = [
        Fault("429 with Retry-After x2", at_s=0, action=_faults(rate_limit=2, retry_after_s=1)),
        Fault("502 burst x3", at_s=1 * s, action=_faults(server_error=3)),
        Fault(
            "502 after a thread and after a note",
            at_s=2 * s,
            action=_faults(after_create=1, note_after_create=1),
        ),
        Fault(
            "429 with RateLimit-Reset only x3",
            at_s=4 * s,
            action=_faults(rate_limit=3, retry_after_s=None, reset_in_s=1),
        ),
    ]
    result = run_chaos(
        "gitlab-faults",
        scenario,
        redis=chaos_redis,
        workdir=tmp_path,
        faults=faults,
        forge="gitlab",
    )
    notes = result.github["by_route"].get(NOTES, {})
    figures = check_invariants(result, extra={"note_posts_by_status": notes})
    assert figures["github_by_status"].get("429", 0) == 5  # every injected limit was met
    assert figures["github_by_status"].get("502", 0) >= 4
    assert all("!" in pr["id"] for pr in result.prs)  # merge requests, not PRs
    assert len(result.reviews) == len(result.prs)
    assert result.webhooks.get("rejected (bad signature)", 0) >= 1  # a wrong token
