"""The README's main-job command, shortened: it must run and show fair sharing."""

from __future__ import annotations

import json

from click.testing import CliRunner

from scheduler.cli import main


def test_demo_runs_and_small_prs_are_not_starved(redis_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("REDIS_URL", redis_url)
    result = CliRunner().invoke(main, ["demo", "--seconds", "12", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    # The big PR was held at the reserve line while small PRs kept starting.
    assert data["denials"].get("reserve", 0) > 0
    assert data["small_prs_started"] >= 3
    assert data["small_pr_wait_max_s"] < 2.0
    assert data["grants"] > 300
