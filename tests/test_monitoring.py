"""The Grafana dashboard (docs/monitoring/) queries metrics a real /metrics serves.

A dashboard is only as good as its queries: a panel over a misspelt or renamed metric
shows "No data" forever, and nobody notices until the day it matters. So every metric
name a panel queries must be one the webhook server's /metrics really exposes, read
from a served app with an account, a limiter charge, a delivery and a review in it.
The provisioning files must point at the datasource the panels name, and compose.yaml
must mount them where Grafana and Prometheus read them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import redis as redis_py
import yaml
from webhook_support import OPEN, gh_pr, serve_hook

from scheduler.config import Settings
from scheduler.quota.limiter import LIMITER_PREFIX, Limiter
from scheduler.quota.plans import Account, get_preset

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "docs" / "monitoring"
_METRIC = re.compile(r"\breviewq_[a-z0-9_]+\b")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MONITORING / "grafana" / "reviewq.json").read_text())
    return data


def queried(dashboard: dict[str, Any]) -> dict[str, set[str]]:
    """Metric name -> the titles of the panels that query it."""
    out: dict[str, set[str]] = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in _METRIC.findall(target["expr"]):
                out.setdefault(name, set()).add(panel["title"])
    return out


def exposed(text: str) -> set[str]:
    """Every sample name a Prometheus text exposition can carry: each family's name,
    and for counters and histograms the names PromQL queries them by."""
    names: set[str] = set()
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count")}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            names.update(name + s for s in suffixes.get(kind, ()))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_every_metric_a_panel_queries_is_served(
    dashboard: dict[str, Any], redis: redis_py.Redis, redis_url: str, unique: str
) -> None:
    account = Account(
        name=f"{unique}-a",
        provider="zai",
        base_url="http://127.0.0.1:1/v1",
        api_key_env="UNUSED_KEY",
        plan=get_preset("zai-pro"),
    )
    settings = Settings(
        redis_url=redis_url, queue_name=f"mon-{unique}", accounts=[account], webhook=OPEN
    )
    limiter = Limiter(redis, account, key_prefix=LIMITER_PREFIX)
    assert limiter.acquire(1000, "octo/app#1", f"req-{unique}", 60_000).granted
    with serve_hook(redis_url, settings.queue_name, settings=settings) as hook:
        assert hook.github(gh_pr()).status_code == 202
        served = exposed(hook.http.get("/metrics").text)
    wanted = queried(dashboard)
    missing = {name: sorted(panels) for name, panels in wanted.items() if name not in served}
    assert not missing, f"panels query metrics /metrics does not serve: {missing}"
    assert len(wanted) >= 15  # the dashboard covers the budget, the queue and the PRs


def test_the_panels_the_operators_look_at_are_there(dashboard: dict[str, Any]) -> None:
    """What the issue asked for: each window's use against its limit over time, the
    queue by state, PR waits, limiter decisions by reason, provider answers by class."""
    wanted = queried(dashboard)
    for metric in (
        "reviewq_account_window_used",
        "reviewq_account_window_limit",
        "reviewq_queue_jobs",
        "reviewq_recent_pr_wait_seconds",
        "reviewq_limiter_decisions_total",
        "reviewq_provider_responses_total",
    ):
        assert metric in wanted, metric
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_provisioning_points_at_the_datasource_the_panels_use(
    dashboard: dict[str, Any],
) -> None:
    sources = yaml.safe_load((MONITORING / "grafana" / "datasources.yaml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"], panel["title"]
    scrape = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["web:8000"]}]


def test_compose_mounts_them_under_the_monitoring_profile() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    prometheus, grafana = compose["services"]["prometheus"], compose["services"]["grafana"]
    assert prometheus["profiles"] == grafana["profiles"] == ["monitoring"]
    assert (
        "./docs/monitoring/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
        in (prometheus["volumes"])
    )
    mounted = {v.split(":")[0].removeprefix("./") for v in grafana["volumes"] if v.startswith(".")}
    assert mounted == {
        "docs/monitoring/grafana/datasources.yaml",
        "docs/monitoring/grafana/dashboards.yaml",
        "docs/monitoring/grafana/reviewq.json",
    }
    for path in mounted:
        assert (ROOT / path).is_file(), path
    provider = yaml.safe_load((MONITORING / "grafana" / "dashboards.yaml").read_text())
    (entry,) = provider["providers"]
    dashboard_mount = next(
        v for v in grafana["volumes"] if v.startswith("./docs/monitoring/grafana/reviewq")
    )
    assert dashboard_mount.split(":")[1].startswith(entry["options"]["path"] + "/")
