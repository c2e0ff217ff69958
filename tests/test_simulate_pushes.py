"""`reviewq simulate scenarios/pushes.yaml`: PRs pushed five times, reviewed
incrementally, against the same scenario with a full review per push.

Real Redis, real RQ worker processes, the limiter, admission and the waker, and the
provider simulator. The bar is issue 16's: a PR pushed five times costs at most 2.5
times one full review (a full review per push costs six); and every head after a push,
a force push included, reviews exactly the files whose content the push changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scheduler.sim.pushes import changed_at, head_sha, pushed_diff
from scheduler.sim.scenario import load_scenario
from scheduler.sim.simulate import run_scenario, synthetic_diff
from workers.review.diff import parse_unified_diff

ROOT = Path(__file__).resolve().parent.parent
PUSHES = ROOT / "scenarios" / "pushes.yaml"
BAR = 2.5  # issue 16: a PR pushed five times costs at most 2.5x one full review


def test_each_push_changes_its_own_files_and_keeps_the_rest() -> None:
    scenario = load_scenario(PUSHES)
    pr = scenario.prs[0]
    assert [changed_at(pr, k) for k in (1, 2, 3)] == [[0, 1], [2], [3, 4, 5]]
    opened = {f.filename: f.patch for f in parse_unified_diff(synthetic_diff(pr, 40))}
    assert opened == {f.filename: f.patch for f in parse_unified_diff(pushed_diff(pr, 0, 40))}
    before = opened
    for k in range(1, len(pr.pushes) + 1):
        after = {f.filename: f.patch for f in parse_unified_diff(pushed_diff(pr, k, 40))}
        differ = sorted(p for p in after if before.get(p) != after[p])
        expected = len(changed_at(pr, k)) + pr.pushes[k - 1].add
        assert len(differ) == expected, (k, differ)
        before = after
    assert len({head_sha(pr, k) for k in range(6)}) == 6


@pytest.mark.slow
@pytest.mark.parametrize("incremental", [True, False])
def test_five_pushes_cost_at_most_two_and_a_half_full_reviews(
    redis_url: str, incremental: bool
) -> None:
    scenario = load_scenario(PUSHES).model_copy(update={"incremental": incremental})
    result: dict[str, Any] = run_scenario(scenario, redis_url=redis_url)
    assert result["not_finished"] == []
    costs = result["pushes"]["prs"]
    assert set(costs) == {pr.id for pr in scenario.prs}
    for pr in scenario.prs:
        cost = costs[pr.id]
        files = [h["files"] for h in cost["heads"]]
        assert len(files) == 6 and files[0] == pr.files, cost
        assert cost["sent"] == sum(h["messages"] for h in cost["heads"]), cost
        if incremental:
            assert files[1:] == cost["changed_files_per_push"], cost  # force pushes too
            assert cost["ratio"] <= BAR, cost
        else:
            assert cost["ratio"] >= 6.0, cost  # the baseline: every head in full
    print(f"\nincremental={incremental}: {[(p, c['ratio']) for p, c in costs.items()]}")
