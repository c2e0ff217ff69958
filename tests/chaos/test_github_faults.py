"""Chaos 5: GitHub misbehaves while PRs are listed and reviews are posted.

- 403 secondary rate limits (with `retry-after`), on the next calls whatever they are:
  listing a PR's files for planning, or listing reviews and posting one;
- a 502 on review creation before GitHub stored it, and one after it stored it;
- 422 on unanchored comments: the PR's diff on GitHub changed after it was planned,
  so no comment lands on a line GitHub knows; they are folded into the body.

Every review is posted once, later: never lost, never twice (the marker in the body
finds the review that the 502-after-create stored).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from harness import Chaos, Fault, base_scenario, check_invariants, run_chaos

from scheduler.sandbox.localredis import LocalRedis
from scheduler.sim.simulate import synthetic_diff
from workers.review.diff import parse_unified_diff

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

REVIEWS = "POST /repos/{owner}/{repo}/pulls/{number}/reviews"
MOVED = "acme/web#1"  # its diff moves on GitHub after planning


def _faults(**changes: Any) -> Any:
    def action(chaos: Chaos) -> dict[str, Any]:
        chaos.github.faults(**changes)
        return changes

    return action


def _move_diff(chaos: Chaos, now_sim: float) -> None:
    """Once MOVED is planned, its files on GitHub move 1000 lines down (same head):
    the review's comments then name lines GitHub cannot place."""
    if "moved" in chaos.notes:
        return
    meta = chaos.sim.admission.read_meta(MOVED)
    if meta is None or meta.status != "active":
        return
    spec = next(p for p in chaos.sim.prs if p.id == MOVED)
    files = parse_unified_diff(synthetic_diff(spec, chaos.sim.scenario.line_chars))
    shifted = [
        f.model_copy(update={"patch": re.sub(r"\+1,(\d+) @@", r"+1001,\1 @@", f.patch or "")})
        for f in files
    ]
    owner_repo, number = MOVED.split("#")
    owner, repo = owner_repo.split("/")
    chaos.github.add_pr(owner, repo, int(number), meta.head_sha, files=shifted)
    chaos.notes["moved"] = True
    chaos.event("diff moved on GitHub", pr=MOVED)


def test_github_rate_limits_5xx_and_422_post_each_review_once(
    chaos_redis: LocalRedis, tmp_path: Path, chaos_run: int
) -> None:
    scenario = base_scenario(
        prs=[{"id": "acme/mono#100", "at": "10m", "files": 40, "lines_per_file": 300}]
    )
    s = scenario.time_scale
    faults = [
        # Before the first PR arrives: its planning meets the limit first.
        Fault(
            "secondary rate limit x2",
            at_s=0,
            action=_faults(secondary_rate_limit=2, retry_after_s=1),
        ),
        Fault(
            "review 502 before and after create",
            at_s=2 * s,
            action=_faults(review_5xx=1, review_5xx_after_create=1),
        ),
        Fault(
            "secondary rate limit x3",
            at_s=4 * s,
            action=_faults(secondary_rate_limit=3, retry_after_s=1),
        ),
    ]
    result = run_chaos(
        "github-faults",
        scenario,
        redis=chaos_redis,
        workdir=tmp_path,
        faults=faults,
        on_tick=_move_diff,
    )
    posts = result.github["by_route"].get(REVIEWS, {})
    figures = check_invariants(result, extra={"review_posts_by_status": posts})
    assert result.notes.get("moved")
    assert figures["github_by_status"].get("403", 0) == 5  # every injected limit was met
    assert posts.get("502", 0) == 2 and posts.get("422", 0) >= 1
    # The moved PR's review has its comments in the body, none inline.
    (moved,) = [r for r in result.reviews if r["pr"] == MOVED]
    assert moved["comments"] == [] and "could not place" in moved["body"]
    assert len(result.reviews) == len(result.prs)
