"""/metrics counts what workers saw: limiter grants, denials by reason, and provider
answers by class and code. Real parts: the provider simulator over HTTP, the Lua
limiter on a real Redis, `attempt()` as a worker runs it, and the webhook app's
/metrics as Prometheus scrapes it.
"""

from __future__ import annotations

import datetime as dt

import redis as redis_py
from prometheus_client.parser import text_string_to_metric_families
from webhook_support import OPEN, serve_hook

from scheduler.config import Settings
from scheduler.quota.circuit import Circuit
from scheduler.quota.limiter import Limiter
from scheduler.quota.plans import Account, get_preset
from scheduler.sandbox import (
    BASE_PATHS,
    DEFAULT_MODELS,
    DEV_KEY,
    Latency,
    ProviderConfig,
    create_provider_app,
    serve_in_thread,
)
from scheduler.webhook.app import LIMITER_PREFIX
from workers.providers.attempt import Served, Wait, attempt
from workers.providers.client import ChatMessage, ChatRequest
from workers.providers.failover import build_route


def test_metrics_count_grants_denials_and_provider_answers(
    redis: redis_py.Redis, redis_url: str, unique: str
) -> None:
    plan = get_preset("synthetic")
    config = ProviderConfig(
        flavour="synthetic", plan=plan, time_scale=1.0, latency=Latency(median_s=0.01, p95_s=0.02)
    )
    with serve_in_thread(create_provider_app(config)) as sim:
        account = Account(
            name=f"{unique}-syn",
            provider="synthetic",
            base_url=sim.url + BASE_PATHS["synthetic"],
            api_key_env="REVIEWQ_METRICS_KEY",
            plan=plan,
        )
        settings = Settings(
            redis_url=redis_url, queue_name=f"m-{unique}", accounts=[account], webhook=OPEN
        )
        route = build_route(
            settings,
            redis,
            env={"REVIEWQ_METRICS_KEY": DEV_KEY},
            circuit=Circuit(redis, key_prefix=LIMITER_PREFIX),
            key_prefix=LIMITER_PREFIX,
        )
        model = DEFAULT_MODELS["synthetic"][0]
        request = ChatRequest(model=model, messages=(ChatMessage(role="user", content="hi"),))
        now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        served = attempt(
            request, pr="octo/app#1", request_id=f"{unique}-1", route=route, now_ms=now
        )
        assert isinstance(served, Served)
        # Someone else holds the only slot: the next attempt is denied for concurrency.
        holder = Limiter(redis, account, key_prefix=LIMITER_PREFIX)
        assert holder.acquire(1000, "octo/app#2", f"{unique}-held", 60_000, model=model).granted
        waited = attempt(
            request, pr="octo/app#1", request_id=f"{unique}-2", route=route, now_ms=now
        )
        assert isinstance(waited, Wait)
        for entry in route.entries:
            entry.client.close()
    with serve_hook(redis_url, settings.queue_name, settings=settings) as hook:
        text = hook.http.get("/metrics").text
    families = {f.name: f.samples for f in text_string_to_metric_families(text)}
    decisions = {
        (s.labels["decision"], s.labels["reason"]): s.value
        for s in families["reviewq_limiter_decisions"]
        if s.name.endswith("_total") and s.labels["account"] == account.name
    }
    assert decisions == {("grant", ""): 1.0, ("deny", "concurrency"): 1.0}
    responses = {
        (s.labels["class"], s.labels["code"]): s.value
        for s in families["reviewq_provider_responses"]
        if s.name.endswith("_total") and s.labels["account"] == account.name
    }
    assert list(responses) and all(cls == "ok" for cls, _ in responses)
    assert sum(responses.values()) == 1.0
