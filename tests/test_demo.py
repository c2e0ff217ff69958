"""The README's main-job command: every part real, every promise checked.

`reviewq demo` at its own x300. At x600 a busy machine's per-message overhead (RQ,
Redis, the processes) became hours of simulated time, and the 9-hour run ended with
13 of 14 PRs reviewed (CI with a load average near 8). PRs arrive as signed webhooks
at a webhook server process, worker processes take budget from the limiter, the
provider simulator referees the quota and the fake GitHub receives the reviews.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from scheduler.cli.main import main
from scheduler.sandbox.localredis import free_port

pytestmark = pytest.mark.slow


def test_demo_reviews_every_pr_once_inside_the_quota(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    result = CliRunner().invoke(main, ["demo", "--time-scale", "300", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    # Every PR planned, reviewed and posted exactly once.
    assert data["prs_done"] == data["prs"] == 14
    assert data["messages_done"] == data["messages_total"] > 400
    assert data["reviews_posted"] == data["prs"]
    assert data["heads_reviewed_twice"] == 0
    # The referee (the provider simulator) never saw the window over its limit.
    assert data["provider_429"] == 0
    for window in data["windows"]:
        assert window["max_used_in_any_window"] <= window["limit"]
    assert data["reserve_violations"] == 0
    # The webhook server took the valid deliveries and turned the rest away.
    hooks = data["webhooks"]
    assert hooks.get("rejected (bad signature)") == 2
    assert sum(n for k, n in hooks.items() if k.startswith("202")) >= 14


def test_a_dead_redis_url_is_exit_3_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not a 30 s wait for the webhook server and a traceback: the documented exit 3,
    naming the URL with its password hidden."""
    monkeypatch.setenv("REDIS_URL", f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    result = CliRunner().invoke(main, ["demo", "--json"])
    assert result.exit_code == 3, result.output
    assert "does not answer" in result.output and "hunter2" not in result.output
    assert "Traceback" not in result.output
