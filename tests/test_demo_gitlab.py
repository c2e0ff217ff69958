"""`reviewq demo --forge gitlab` at its own x300 (see test_demo.py): merge requests in
nested groups on the fake GitLab, delivered as GitLab's webhooks, each reviewed once
inside the quota."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from scheduler.cli.main import main

pytestmark = pytest.mark.slow


def test_the_gitlab_demo_reviews_every_merge_request_once_inside_the_quota(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    result = CliRunner().invoke(
        main, ["demo", "--forge", "gitlab", "--time-scale", "300", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["prs_done"] == data["prs"] == 14
    assert data["big_pr"]["id"] == "acme/platform/monorepo!300"
    assert data["messages_done"] == data["messages_total"] > 400
    assert data["reviews_posted"] == data["prs"] and data["heads_reviewed_twice"] == 0
    assert data["provider_429"] == 0
    for window in data["windows"]:
        assert window["max_used_in_any_window"] <= window["limit"]
    hooks = data["webhooks"]
    assert hooks.get("rejected (bad signature)") == 2  # a wrong X-Gitlab-Token, twice
    assert hooks.get("200 duplicate") == 2 and hooks.get("202 ignored") == 4
