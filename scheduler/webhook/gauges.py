"""The metric families read from Redis per account and per PR (see `metrics`)."""

from __future__ import annotations

from typing import cast

import redis as redis_lib
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from scheduler.ops.stats import percentile
from scheduler.quota.circuit import Circuit
from scheduler.quota.ledger import ChargeLedger
from scheduler.quota.limiter import LimiterStatus
from scheduler.quota.readings import ProviderReadings
from scheduler.quota.tokenbound import InputBound
from scheduler.state.keys import Keys

__all__ = ["RECENT_PRS", "AccountFamilies", "pr_families"]

RECENT_PRS = 500  # PRs the wait figures cover: the latest arrivals
_MILLI = 1000.0
_QUANTILES = (50, 95, 99)
_UNSTARTED = {"planning", "active"}


class AccountFamilies:
    """One family per figure, one sample per account (and window), filled in turn."""

    def __init__(self) -> None:
        window, account = ["account", "window", "unit"], ["account"]
        self.used = _gauge("reviewq_account_window_used", "Quota used in the window.", window)
        self.limit = _gauge("reviewq_account_window_limit", "The window's quota.", window)
        self.spendable = _gauge(
            "reviewq_account_window_spendable",
            "The part of the window's quota the limiter grants (limit less headroom).",
            window,
        )
        self.reserve = _gauge(
            "reviewq_account_window_reserve",
            "The reserve in force: PRs over their share stop at spendable minus it.",
            [*window, "mode"],
        )
        self.reserve_demand = _gauge(
            "reviewq_account_window_reserve_demand",
            "What the adaptive reserve was sized from: the largest recent burst of "
            "small PRs' work (recent) and their work still queued (docs/reserve.md).",
            [*window, "part"],
        )
        self.next_free = _gauge(
            "reviewq_account_window_next_free_timestamp_seconds",
            "When the window next frees quota (absent: nothing is charged in it).",
            ["account", "window"],
        )
        self.leases = _gauge("reviewq_account_leases", "Provider calls in flight.", account)
        self.concurrency = _gauge(
            "reviewq_account_concurrency_limit", "Calls allowed at once by the plan.", account
        )
        self.blocked = _gauge(
            "reviewq_account_blocked_until_timestamp_seconds",
            "Until when the provider told us to stop (0: not blocked).",
            account,
        )
        self.circuit = _gauge(
            "reviewq_account_circuit_open", "1 while the account needs a person.", account
        )
        self.line = _gauge(
            "reviewq_account_line_length", "Messages waiting in line for the account.", account
        )
        self.decisions = CounterMetricFamily(
            "reviewq_limiter_decisions",
            "Limiter answers to workers: grants, and denials by reason.",
            labels=["account", "decision", "reason"],
        )
        self.responses = CounterMetricFamily(
            "reviewq_provider_responses",
            "Provider answers by class (ok, transient, window_exhausted, ...) and code.",
            labels=["account", "class", "code"],
        )
        self.events = CounterMetricFamily(
            "reviewq_account_health_events",
            "Provider health events counted per account (e.g. 1302: too much concurrency).",
            labels=["account", "event"],
        )
        self.credit = CreditFamilies()

    def add(
        self, status: LimiterStatus, circuit: Circuit, redis: redis_lib.Redis, keys: Keys
    ) -> None:
        name = status.account
        for w in status.windows:
            labels = [name, w.name, w.unit]
            self.used.add_metric(labels, w.used / _MILLI)
            self.limit.add_metric(labels, w.limit / _MILLI)
            self.spendable.add_metric(labels, w.spendable / _MILLI)
            mode = "adaptive" if w.reserve_adaptive else "fixed"
            self.reserve.add_metric([*labels, mode], w.reserve / _MILLI)
            if w.next_free_at_ms is not None:
                self.next_free.add_metric([name, w.name], w.next_free_at_ms / _MILLI)
        self._demand(status)
        self.leases.add_metric([name], len(status.leases))
        if status.concurrency is not None:
            self.concurrency.add_metric([name], status.concurrency)
        self.blocked.add_metric([name], status.block.until_ms / _MILLI if status.block else 0)
        self.circuit.add_metric([name], 1 if circuit.is_open(name) else 0)
        for event, count in sorted(circuit.counters(name).items()):
            self.events.add_metric([name, event], count)
        for event, count in sorted(circuit.tallies(name).items()):
            self._count(name, event, count)
        self.line.add_metric([name], int(cast(int, redis.zcard(keys.line(name)))))
        self.credit.add(name, circuit.key_prefix, redis, keys)

    def _demand(self, status: LimiterStatus) -> None:
        """The adaptive reserve's estimate per window, when the waker has sized one."""
        windows = (status.reserve_demand or {}).get("windows") or {}
        for w in status.windows:
            parts = windows.get(w.name) if w.reserve_adaptive else None
            if not isinstance(parts, dict):
                continue
            for part in ("recent", "queued", "leaving"):
                value = parts.get(part)
                if isinstance(value, int):
                    labels = [status.account, w.name, w.unit, part]
                    self.reserve_demand.add_metric(labels, value / _MILLI)

    def _count(self, name: str, event: str, count: int) -> None:
        """Tallies share one hash per account (`Circuit.tally`); split them by kind."""
        kind, _, rest = event.partition(":")
        if event == "grant":
            self.decisions.add_metric([name, "grant", ""], count)
        elif kind == "deny":
            self.decisions.add_metric([name, "deny", rest], count)
        elif kind == "response":
            cls, _, code = rest.partition(":")
            self.responses.add_metric([name, cls, code], count)

    def all(self) -> list[Metric]:
        return [
            self.used,
            self.limit,
            self.spendable,
            self.reserve,
            self.reserve_demand,
            self.next_free,
            self.leases,
            self.concurrency,
            self.blocked,
            self.circuit,
            self.line,
            self.events,
            self.decisions,
            self.responses,
            *self.credit.all(),
        ]


class CreditFamilies:
    """What credit plans add per account: the key's detected kind against the plan,
    where each window's last provider reading came from, the learned input bound, and
    the messages deferred to off-peak."""

    def __init__(self) -> None:
        self.mismatch = _gauge(
            "reviewq_account_plan_mismatch",
            "1 if the quota endpoint says the key is of another kind than the plan counts "
            "(Z.AI V2 prompts vs V3 credits); `suggested` is the preset to use.",
            ["account", "configured", "detected", "suggested"],
        )
        self.reading = _gauge(
            "reviewq_account_window_reading_timestamp_seconds",
            "When the window's last provider reading was applied, by source.",
            ["account", "window", "source"],
        )
        self.empty = _gauge(
            "reviewq_account_empty_quota_answer_timestamp_seconds",
            "When a quota source last answered with no reading at all (e.g. `{}`).",
            ["account", "source"],
        )
        self.bound_calls = CounterMetricFamily(
            "reviewq_input_bound_calls",
            "Settled calls the input-token bound learned from.",
            labels=["account", "model"],
        )
        self.bound_exceeded = CounterMetricFamily(
            "reviewq_input_bound_exceeded",
            "Settled calls whose prompt had more tokens than their grant reserved.",
            labels=["account", "model"],
        )
        self.bound_factor = _gauge(
            "reviewq_input_bound_factor",
            "The factor on the characters/4 estimate a grant reserves input tokens at.",
            ["account", "model"],
        )
        self.charged = CounterMetricFamily(
            "reviewq_account_charged",
            "What the workers charged the window in all, after settles and refunds, in "
            "the plan's units (credits on a credit plan).",
            labels=["account", "window"],
        )
        self.deferrals = CounterMetricFamily(
            "reviewq_offpeak_deferrals",
            "PR deferrals to off-peak prices (each counted once, at its first message).",
            labels=["account"],
        )

    def add(self, name: str, prefix: str, redis: redis_lib.Redis, keys: Keys) -> None:
        view = ProviderReadings(redis, name, key_prefix=prefix).read()
        if (found := view.detection) is not None:
            labels = [name, found.configured, found.metering, found.suggested or ""]
            self.mismatch.add_metric(labels, 1 if found.mismatch else 0)
        for window, r in sorted(view.windows.items()):
            self.reading.add_metric([name, window, r.source], r.at_ms / _MILLI)
        for source, at_ms in sorted(view.empty.items()):
            self.empty.add_metric([name, source], at_ms / _MILLI)
        for b in InputBound(redis, name, key_prefix=prefix).stats():
            self.bound_calls.add_metric([name, b.model], b.calls)
            self.bound_exceeded.add_metric([name, b.model], b.exceeded)
            self.bound_factor.add_metric([name, b.model], b.factor)
        for window, milli in sorted(ChargeLedger(redis, name, key_prefix=prefix).totals().items()):
            self.charged.add_metric([name, window], milli / _MILLI)
        deferred = cast(bytes | None, redis.hget(keys.deferrals, name))
        self.deferrals.add_metric([name], int(deferred or 0))

    def all(self) -> list[Metric]:
        return [
            self.mismatch,
            self.reading,
            self.empty,
            self.bound_calls,
            self.bound_exceeded,
            self.bound_factor,
            self.charged,
            self.deferrals,
        ]


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def pr_families(redis: redis_lib.Redis, keys: Keys) -> list[Metric]:
    """PR counts by status and how long PRs waited for their first granted call, over
    the latest `RECENT_PRS` arrivals: two round trips, however many PRs exist."""
    with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(keys.prs)
        pipe.zrevrange(keys.prs, 0, RECENT_PRS - 1)
        pipe.time()
        total, members, (sec, usec) = pipe.execute()
    now_ms = int(sec) * 1000 + int(usec) // 1000
    fields = ["status", "arrived_ms", "first_started_ms"]
    with redis.pipeline(transaction=False) as pipe:
        for member in members:
            pipe.hmget(keys.meta(member.decode()), fields)
        rows = cast(list[list[bytes | None]], pipe.execute())
    statuses: dict[str, int] = {}
    waits: list[float] = []
    oldest = 0.0
    for status_raw, arrived_raw, started_raw in rows:
        if status_raw is None or not arrived_raw:
            continue  # expired since it was listed
        status, arrived = status_raw.decode(), int(arrived_raw)
        statuses[status] = statuses.get(status, 0) + 1
        if started_raw:
            waits.append((int(started_raw) - arrived) / _MILLI)
        elif status in _UNSTARTED:
            oldest = max(oldest, (now_ms - arrived) / _MILLI)
    deferred = GaugeMetricFamily(
        "reviewq_prs_deferred",
        "PRs whose messages wait for off-peak prices now.",
        int(cast(int, redis.zcard(keys.deferred))),
    )
    return [*_pr_metrics(int(total), statuses, waits, oldest), deferred]


def _pr_metrics(
    total: int, statuses: dict[str, int], waits: list[float], oldest: float
) -> list[Metric]:
    by_status = _gauge(
        "reviewq_recent_prs", f"The latest {RECENT_PRS} PRs to arrive, by status.", ["status"]
    )
    for status, count in sorted(statuses.items()):
        by_status.add_metric([status], count)
    wait = _gauge(
        "reviewq_recent_pr_wait_seconds",
        f"From arrival to the first granted provider call, over the latest {RECENT_PRS} PRs "
        "that started (nearest-rank quantiles).",
        ["quantile"],
    )
    for q in _QUANTILES:
        value = percentile(waits, q)
        if value is not None:
            wait.add_metric([str(q / 100)], value)
    return [
        GaugeMetricFamily("reviewq_prs_tracked", "PRs the deployment knows of.", total),
        by_status,
        wait,
        GaugeMetricFamily(
            "reviewq_oldest_unstarted_pr_age_seconds",
            "Age of the oldest recent PR still waiting for its first provider call.",
            oldest,
        ),
    ]
