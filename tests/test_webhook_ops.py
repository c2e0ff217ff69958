"""GET /healthz and GET /metrics: what an operator's probe and Prometheus read."""

from __future__ import annotations

import uuid

import pytest
import redis as redis_py
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from webhook_support import OPEN, gh_pr, serve_hook

from scheduler.config import Settings
from scheduler.quota.limiter import Limiter
from scheduler.quota.plans import Account, get_preset
from scheduler.sandbox.localredis import free_port
from scheduler.webhook.app import LIMITER_PREFIX


def samples(text: str) -> dict[str, list[Sample]]:
    """Every sample by metric family name; parsing fails loudly on malformed text."""
    return {f.name: list(f.samples) for f in text_string_to_metric_families(text)}


def test_healthz_is_200_when_redis_answers(redis_url: str, unique: str) -> None:
    with serve_hook(redis_url, f"ops-{unique}") as hook:
        response = hook.http.get("/healthz")
        assert response.status_code == 200 and response.json()["status"] == "ok"


def test_healthz_is_503_naming_redis_without_its_password(unique: str) -> None:
    url = f"redis://:hunter2-password@127.0.0.1:{free_port()}"  # nothing listens there
    with serve_hook(url, f"ops-{unique}", settings=Settings(redis_url=url)) as hook:
        response = hook.http.get("/healthz")
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert "Redis at redis://:****@127.0.0.1" in detail and "unreachable" in detail
    assert "hunter2" not in response.text


def test_metrics_show_account_windows_queue_and_deliveries(
    redis: redis_py.Redis, redis_url: str, unique: str
) -> None:
    account = Account(
        name=f"{unique}-acct",
        provider="zai",
        base_url="http://127.0.0.1:1/v1",
        api_key_env="UNUSED_KEY",
        plan=get_preset("zai-lite"),
    )
    settings = Settings(
        redis_url=redis_url, queue_name=f"ops-{unique}", accounts=[account], webhook=OPEN
    )
    limiter = Limiter(redis, account, key_prefix=LIMITER_PREFIX)
    assert limiter.acquire(1000, "octo/app#1", f"req-{unique}", 60_000).granted
    with serve_hook(redis_url, settings.queue_name, settings=settings) as hook:
        assert hook.github(gh_pr(), delivery=str(uuid.uuid4())).status_code == 202
        hook.github(gh_pr(), secret="wrong")
        response = hook.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    used = {s.labels["window"]: s.value for s in found["reviewq_account_window_used"]}
    assert used == {"prompts_5h": 1.0, "prompts_week": 1.0}
    limits = {s.labels["window"] for s in found["reviewq_account_window_limit"]}
    assert limits == {"prompts_5h", "prompts_week"}
    assert all(s.labels["unit"] == "requests" for s in found["reviewq_account_window_limit"])
    assert len(found["reviewq_account_window_next_free_timestamp_seconds"]) == 2
    assert found["reviewq_account_leases"][0].value == 1
    assert found["reviewq_redis_up"][0].value == 1
    jobs = {s.labels["state"]: s.value for s in found["reviewq_queue_jobs"]}
    assert jobs["queued"] == 1 and jobs["failed"] == 0
    outcomes = {
        s.labels["outcome"]: s.value
        for s in found["reviewq_webhook_deliveries"]
        if s.name.endswith("_total")
    }
    assert outcomes == {"enqueued": 1.0, "bad_signature": 1.0}
    statuses = {s.labels["status"]: s.value for s in found["reviewq_recent_prs"]}
    assert statuses == {"planning": 1.0}
    assert found["reviewq_oldest_unstarted_pr_age_seconds"][0].value >= 0


@pytest.mark.parametrize("path", ["/metrics", "/healthz"])
def test_redis_down_never_500s_the_operator_endpoints(unique: str, path: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}"
    with serve_hook(url, f"ops-{unique}") as hook:
        response = hook.http.get(path)
    if path == "/metrics":
        assert response.status_code == 200
        assert samples(response.text)["reviewq_redis_up"][0].value == 0
    else:
        assert response.status_code == 503
