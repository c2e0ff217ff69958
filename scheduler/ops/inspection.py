"""A read-only snapshot of a deployment: queues, account budgets, PRs and their ETAs.

`reviewq inspect` may run any time, every second, against production, so nothing
here writes to Redis. RQ's registry helpers (`count`, `get_job_ids`) clean registries
up as they read, so the registries' sorted sets are read directly (ZCARD); the
limiter's status script skips expired entries instead of trimming them; PR state is
read with HGETALL. Time is Redis `TIME`, the clock the limiter and admission use.

Amounts stay in milli-units and times in epoch milliseconds, as stored: the JSON
output carries numbers, and the tables format them (models: `scheduler.ops.snapshots`).
"""

from __future__ import annotations

import math
import statistics
from typing import Literal, cast

import redis as redis_lib

from scheduler.config import Settings, redact_url
from scheduler.ops.credit_views import deferred_views, provider_view
from scheduler.ops.deployment import LIMITER_PREFIX, deployment_prefix
from scheduler.ops.snapshots import (
    AccountView,
    BlockView,
    CircuitView,
    Eta,
    LeaseView,
    MessageCounts,
    MessageView,
    PrSummary,
    QueueCounts,
    Snapshot,
    WindowView,
)
from scheduler.quota.circuit import Circuit
from scheduler.quota.limiter import Limiter, LimiterStatus
from scheduler.quota.plans import Account
from scheduler.state.jobs import review_queue
from scheduler.state.keys import Keys
from scheduler.state.records import MessageState, PrView, read_pr

__all__ = ["estimate_eta", "redis_now_ms", "snapshot", "summarise_pr"]


def redis_now_ms(redis: redis_lib.Redis) -> int:
    sec, usec = cast(tuple[int, int], redis.time())
    return int(sec) * 1000 + int(usec) // 1000


def _queue_counts(redis: redis_lib.Redis, settings: Settings, keys: Keys) -> QueueCounts:
    queue = review_queue(settings.queue_name, redis)
    registries = (
        queue.started_job_registry,
        queue.scheduled_job_registry,
        queue.deferred_job_registry,
        queue.failed_job_registry,
    )
    names = [a.name for a in settings.accounts]
    with redis.pipeline(transaction=False) as pipe:
        pipe.llen(queue.key)
        for registry in registries:
            pipe.zcard(registry.key)  # not registry.count: that cleans up first
        for name in names:
            pipe.zcard(keys.line(name))
        pipe.zcard(keys.timed)
        pipe.zcard(keys.running)
        counts = [int(n) for n in pipe.execute()]
    lines = counts[5 : 5 + len(names)]
    return QueueCounts(
        queued=counts[0],
        started=counts[1],
        scheduled=counts[2],
        deferred=counts[3],
        failed=counts[4],
        waiting_for_budget=dict(zip(names, lines, strict=True)),
        timed=counts[-2],
        running=counts[-1],
    )


def _window_views(status: LimiterStatus) -> list[WindowView]:
    now, out = status.now_ms, []
    demand = (status.reserve_demand or {}).get("windows") or {}
    for w in status.windows:
        nxt = w.next_free_at_ms
        why = demand.get(w.name) if w.reserve_adaptive else None
        out.append(
            WindowView(
                name=w.name,
                kind=w.kind,
                unit=w.unit,
                used_milli=w.used,
                limit_milli=w.limit,
                spendable_milli=w.spendable,
                free_milli=max(0, w.spendable - w.used),
                percent=round(100 * w.used / w.limit, 1) if w.limit else 0.0,
                next_free_at_ms=nxt,
                next_free_in_ms=None if nxt is None else max(0, nxt - now),
                reserve_milli=w.reserve,
                reserve_adaptive=w.reserve_adaptive,
                reserve_demand=_demand(why),
            )
        )
    return out


def _demand(raw: object) -> dict[str, int] | None:
    """The estimate behind an adaptive reserve, as stored by the waker (its numbers
    only: the field is the waker's text, read back, and may be from an older version)."""
    if not isinstance(raw, dict):
        return None
    parts = ("recent", "queued", "lent", "leaving")
    return {k: int(v) for k, v in raw.items() if k in parts and isinstance(v, int)}


def _circuit_view(circuit: Circuit, name: str) -> CircuitView | None:
    opened = circuit.state(name)
    if opened is None:
        return None
    return CircuitView(
        code=opened.code,
        message=opened.message,
        opened_at_ms=opened.opened_at_ms,
        expires_in_ms=circuit.ttl_ms_left(name),
    )


def _account_view(redis: redis_lib.Redis, account: Account, circuit: Circuit) -> AccountView:
    status = Limiter(redis, account, key_prefix=LIMITER_PREFIX).status()
    now, blk = status.now_ms, status.block
    block = None
    if blk is not None:
        block = BlockView(until_ms=blk.until_ms, in_ms=blk.until_ms - now, reason=blk.reason)
    return AccountView(
        name=account.name,
        provider=account.provider,
        plan=account.plan.name,
        concurrency=status.concurrency,
        in_use=len(status.leases),
        leases=[
            LeaseView(lease_id=x.lease_id, expires_in_ms=x.deadline_ms - now) for x in status.leases
        ],
        block=block,
        circuit=_circuit_view(circuit, account.name),
        windows=_window_views(status),
        provider_view=provider_view(redis, account.name, LIMITER_PREFIX, now),
    )


def _counts(view: PrView) -> MessageCounts:
    counts = MessageCounts(total=view.meta.total)
    for status, n in view.counts().items():
        setattr(counts, status, n)
    return counts


def _costs(messages: dict[str, MessageState]) -> dict[str, dict[str, int]]:
    """What every generation's messages were charged, per account and window."""
    out: dict[str, dict[str, int]] = {}
    for state in messages.values():
        if state.account and state.cost:
            per = out.setdefault(state.account, {})
            for window, milli in state.cost.items():
                per[window] = per.get(window, 0) + milli
    return out


def _call_ms(views: list[PrView]) -> int | None:
    """The median time from grant to finish of done messages: a typical call."""
    spans = [
        s.finished_ms - s.started_ms
        for v in views
        for s in v.messages.values()
        if s.status == "done" and s.started_ms is not None and s.finished_ms is not None
    ]
    return int(statistics.median(spans)) if spans else None


def _order(mid: str) -> tuple[int, int]:
    gen, _, n = mid.partition(".")
    return int(gen), int(n) if n.isdigit() else 0


def _detail(view: PrView) -> list[MessageView]:
    return [
        MessageView(
            id=mid,
            status=s.status,
            reason=s.reason,
            account=s.account,
            retries=s.retries,
            waits=s.waits,
            runs=s.runs,
            retry_at_ms=s.retry_at_ms,
            started_ms=s.started_ms,
            finished_ms=s.finished_ms,
        )
        for mid, s in sorted(view.current().items(), key=lambda kv: _order(kv[0]))
    ]


def summarise_pr(
    view: PrView,
    *,
    now_ms: int,
    main: AccountView | None,
    call_ms: int | None,
    per_pr_cap: int,
    detail: bool = False,
) -> PrSummary:
    """One PR as `inspect` shows it (see `estimate_eta` for the ETA)."""
    meta = view.meta
    ended = meta.finished_ms if meta.status in {"done", "cancelled"} else None
    return PrSummary(
        pr=meta.pr,
        status=meta.status,
        head_sha=meta.head_sha,
        gen=meta.gen,
        arrived_ms=meta.arrived_ms,
        first_started_ms=meta.first_started_ms,
        finished_ms=meta.finished_ms,
        waited_ms=max(0, (ended or now_ms) - meta.arrived_ms),
        error=meta.error,
        messages=_counts(view),
        cost_used_milli=_costs(view.messages),
        eta=estimate_eta(view, now_ms, main, call_ms, per_pr_cap),
        detail=_detail(view) if detail else None,
    )


def _at(kind: Literal["estimate", "not_before"], at: int, now: int, reason: str) -> Eta:
    return Eta(kind=kind, at_ms=at, in_ms=max(0, at - now), reason=reason)


def estimate_eta(
    view: PrView, now_ms: int, main: AccountView | None, call_ms: int | None, per_pr_cap: int
) -> Eta:
    """When the PR's review should be done, simply and honestly.

    The messages left (of the current head, not yet done, failed or cancelled) cost
    what the plan's estimate says per message (`PrMeta.estimate` / `total`), priced on
    the main account, the one the estimate is for. Then:
    - main's circuit is open, or the PR is not planned yet: unknown;
    - in some window the cost left exceeds the free budget: `not_before` the latest
      of those windows' next-free times (and any provider block): budget must free
      first, and how much frees then is not known here, so this is a lower bound;
    - else `estimate`: now (or the block's end) + rounds x a typical call, where
      rounds = remaining / parallel, parallel = min(remaining, the PR's in-flight cap,
      the account's concurrency), and a typical call is the median grant-to-finish
      time of done messages seen in this snapshot (unknown while none is done).
    Other PRs sharing the budget are ignored, so a busy queue makes it optimistic.
    """
    meta = view.meta
    if meta.status in {"done", "cancelled"}:
        return Eta(kind="finished", at_ms=meta.finished_ms, in_ms=0, reason=meta.status)
    if meta.status == "planning":
        return Eta(kind="unknown", reason="not planned yet: its files are still being listed")
    left = [s for s in view.current().values() if not s.terminal]
    if not left:
        return _at("estimate", now_ms, now_ms, "every message ended: the review is being sent")
    if main is None:
        return Eta(kind="unknown", reason="no account configured")
    if main.circuit is not None:
        return Eta(kind="unknown", reason=f"{main.name} is out of service: {main.circuit.message}")
    start = max(now_ms, main.block.until_ms if main.block else now_ms)
    short: list[WindowView] = []
    for window in main.windows:
        need = math.ceil(meta.estimate.get(window.name, 0) * len(left) / max(1, meta.total))
        if need > window.free_milli:
            short.append(window)
    if short:
        if any(w.next_free_at_ms is None for w in short):
            return Eta(kind="unknown", reason="the work left does not fit the plan's windows")
        at = max(start, *(cast(int, w.next_free_at_ms) for w in short))
        names = ", ".join(w.name for w in short)
        return _at("not_before", at, now_ms, f"waiting for budget in {names}")
    if call_ms is None:
        return Eta(kind="unknown", reason="no message has finished yet to time a call by")
    parallel = min(len(left), per_pr_cap or len(left), main.concurrency or len(left))
    rounds = math.ceil(len(left) / parallel)
    return _at("estimate", start + rounds * call_ms, now_ms, f"{len(left)} messages left")


def snapshot(
    redis: redis_lib.Redis,
    settings: Settings,
    *,
    now_ms: int | None = None,
    limit: int = 20,
    pr: str | None = None,
) -> Snapshot:
    """Everything `inspect` shows, read without writing (see module doc). PRs are the
    `limit` most recent arrivals, or only `pr` (with its messages) when given; a
    `pr` Redis does not know is left out, for the caller to report."""
    now = redis_now_ms(redis) if now_ms is None else now_ms
    prefix = deployment_prefix(settings)
    keys = Keys(prefix)
    circuit = Circuit(redis, key_prefix=LIMITER_PREFIX)
    accounts = [_account_view(redis, a, circuit) for a in settings.accounts]
    total = int(cast(int, redis.zcard(keys.prs)))
    if pr is not None:
        ids = [pr]
    else:
        raw = cast(list[bytes], redis.zrevrange(keys.prs, 0, max(0, limit - 1)))
        ids = [m.decode() for m in raw]
    views = [v for v in (read_pr(redis, keys, i) for i in ids) if v is not None]
    call_ms = _call_ms(views)
    cap = settings.review.fairness.cap
    main = accounts[0] if accounts else None
    prs = [
        summarise_pr(
            v, now_ms=now, main=main, call_ms=call_ms, per_pr_cap=cap, detail=pr is not None
        )
        for v in views
    ]
    return Snapshot(
        now_ms=now,
        redis_url=redact_url(settings.redis_url),
        queue_name=settings.queue_name,
        prefix=prefix,
        queues=_queue_counts(redis, settings, keys),
        accounts=accounts,
        prs_total=total,
        prs=prs,
        typical_call_ms=call_ms,
        deferred=deferred_views(redis, keys, now),
    )
