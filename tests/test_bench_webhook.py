"""`reviewq bench webhook` runs end to end: a real `reviewq serve`, every delivery queued.

Behaviour only, never speed: a tiny run on a busy CI machine says nothing about the bar.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from scheduler.bench.webhook import deliveries, payload
from scheduler.cli.main import main
from scheduler.webhook import sign


@pytest.mark.slow
def test_a_tiny_run_queues_every_delivery_once(redis_url: str) -> None:
    args = ["bench", "webhook", "--deliveries", "30", "--concurrency", "3", "--warmup", "5"]
    result = CliRunner().invoke(main, [*args, "--json"], env={"REDIS_URL": redis_url})
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["statuses"] == {"202": 30} and data["errors"] == 0
    assert data["enqueued"] == 30
    assert data["deliveries_per_s"] > 0 and 0 < data["p50_ms"] <= data["p99_ms"] <= data["max_ms"]
    assert set(data["bar"]) == {"deliveries_per_s", "p99_ms_below", "met"}


def test_deliveries_are_distinct_signed_pull_request_events() -> None:
    batch = deliveries(3, b"k", "run")
    shas = {json.loads(body)["pull_request"]["head"]["sha"] for body, _ in batch}
    ids = {headers["X-GitHub-Delivery"] for _, headers in batch}
    assert len(shas) == len(ids) == 3
    body, headers = batch[0]
    assert headers["X-Hub-Signature-256"] == sign(b"k", body)
    assert payload(0, "run")["action"] == "opened" and len(body) > 10_000
