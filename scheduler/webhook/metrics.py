"""`GET /metrics`: Prometheus text, read from Redis at scrape time.

Budget, queue and PR figures live in Redis, written by workers on other hosts, so the
collector reads them when scraped instead of keeping copies that would drift. Only
the webhook's own counters live in this process. A scrape while Redis is down still
answers: `reviewq_redis_up 0` and the in-process counters.

Units: quota figures are in the plan's units (requests or tokens, as `unit` says),
not the limiter's milli-units; times are seconds, timestamps are Unix seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import redis as redis_lib
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from rq import Queue

from scheduler.quota.circuit import Circuit
from scheduler.quota.limiter import Limiter
from scheduler.state.keys import Keys
from scheduler.webhook.gauges import AccountFamilies, pr_families

__all__ = ["RedisCollector", "WebhookMetrics"]

log = logging.getLogger(__name__)

_QUEUE_STATES = ("scheduled", "started", "deferred", "failed", "finished", "canceled")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class WebhookMetrics:
    """The counters this process owns, in a registry of its own (one per app), so two
    apps in one process (tests) never share or collide."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "reviewq_webhook_deliveries",
            "Webhook deliveries answered, by forge and outcome.",
            ["forge", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "reviewq_webhook_request_duration_seconds",
            "Time to answer a webhook delivery, from the request to the response.",
            ["forge"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )

    def observe(self, forge: str, outcome: str, seconds: float) -> None:
        self.deliveries.labels(forge, outcome).inc()
        self.latency.labels(forge).observe(seconds)


class RedisCollector(Collector):
    """Everything read from Redis: account windows, leases, blocks and circuits, the
    RQ queue and its registries, the admission lines and PR waits."""

    def __init__(
        self,
        redis: redis_lib.Redis,
        queue: Queue,
        keys: Keys,
        limiters: Iterable[Limiter],
        circuit: Circuit,
    ) -> None:
        self.redis, self.queue, self.keys = redis, queue, keys
        self.limiters, self.circuit = list(limiters), circuit

    def collect(self) -> Iterator[Metric]:
        try:
            families = [*self._accounts(), *self._queue(), *pr_families(self.redis, self.keys)]
            up = 1
        except redis_lib.RedisError as exc:
            log.warning("metrics: Redis unreachable: %s", exc)
            families, up = [], 0
        yield GaugeMetricFamily("reviewq_redis_up", "1 if Redis answered this scrape.", up)
        yield from families

    def _accounts(self) -> list[Metric]:
        families = AccountFamilies()
        for limiter in self.limiters:
            families.add(limiter.status(), self.circuit, self.redis, self.keys)
        return families.all()

    def _queue(self) -> list[Metric]:
        q = self.queue
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(q.key)
            for state in _QUEUE_STATES:
                pipe.zcard(getattr(q, f"{state}_job_registry").key)
            pipe.zcard(self.keys.timed)
            pipe.zcard(self.keys.running)
            counts = [int(c) for c in pipe.execute()]
        jobs = GaugeMetricFamily(
            "reviewq_queue_jobs",
            "RQ jobs by state (queued: waiting for a worker; started: running).",
            labels=["queue", "state"],
        )
        for state, count in zip(("queued", *_QUEUE_STATES), counts, strict=False):
            jobs.add_metric([q.name, state], count)
        timed = GaugeMetricFamily(
            "reviewq_messages_timed",
            "Messages waiting on a due time of their own (an error backoff, the PR's share).",
            counts[-2],
        )
        running = GaugeMetricFamily(
            "reviewq_messages_running", "Messages a worker is calling a provider for.", counts[-1]
        )
        return [jobs, timed, running]
