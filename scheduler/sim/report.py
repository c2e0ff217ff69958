"""The figures of a `simulate` run: per PR, per account, and the checks of the issue.

Quota figures come from the simulator (the referee): its limits and the most it saw
used in any window. PR timings come from admission's state in Redis, and the reserve
check replays the grant trace, with each PR's use in each window rebuilt from the
grants themselves rather than read from the limiter it is checking.
"""

from __future__ import annotations

import json
from collections import defaultdict, deque
from typing import TYPE_CHECKING, Any

from scheduler.ops.stats import percentile
from scheduler.sim.credits import credit_figures, reviewq_charged_milli
from scheduler.sim.reserves import ReserveTimeline, reserve_summary, reserve_timelines
from scheduler.state.records import PrMeta, read_pr

if TYPE_CHECKING:
    from scheduler.sim.run import SimRun

__all__ = ["SMALL_PR_FILES", "report"]

SMALL_PR_FILES = 10


def report(run: SimRun, stats: dict[str, dict[str, Any]]) -> dict[str, Any]:
    trace = _read_trace(run)
    prs = _prs(run)
    small = [p["wait_s"] for p in prs if p["files"] <= SMALL_PR_FILES and p["wait_s"] is not None]
    grants = [e for e in trace if e.get("event", "grant") == "grant"]
    done = sum(p["done"] for p in prs)
    accounts = [_account(run, name, stats[name], grants, done) for name in stats]
    main = accounts[0]["windows"][0] if accounts and accounts[0]["windows"] else {}
    timelines = reserve_timelines(run)
    return {
        "scenario": {
            "policy": run.policy,
            "time_scale": run.scenario.time_scale,
            "duration_s": run.scenario.duration,
            "workers": run.scenario.workers,
        },
        "ended_s": run.sim_s(run.ended_ms),
        "prs": prs,
        "accounts": accounts,
        "utilization": main.get("utilization"),
        "messages_done": sum(p["done"] for p in prs),
        "messages_total": sum(p["messages"] for p in prs),
        "small_pr_wait_p95_s": percentile(small, 95),
        "small_pr_wait_p50_s": percentile(small, 50),
        "not_finished": [p["id"] for p in prs if p["status"] != "done"],
        "reserve_check": _reserve_check(run, grants, timelines),
        "reserve": reserve_summary(run, timelines),
        "slot_handoff_ms": _handoff(trace),
        "window_reuse_ms": _window_reuse(run, grants),
        "trace": trace,
    }


def _read_trace(run: SimRun) -> list[dict[str, Any]]:
    raw = run.redis.lrange(run.admission.keys.trace, 0, -1)
    out = []
    for item in raw:  # type: ignore[union-attr]
        event = json.loads(item)
        event["t_s"] = run.sim_s(event["t_ms"])
        out.append(event)
    return sorted(out, key=lambda e: e["t_ms"])


def _prs(run: SimRun) -> list[dict[str, Any]]:
    out = []
    for spec in run.prs:
        view = read_pr(run.redis, run.admission.keys, spec.id)
        if view is None:
            out.append(
                {
                    "id": spec.id,
                    "arrived_s": None,
                    "first_started_s": None,
                    "finished_s": None,
                    "files": spec.files,
                    "messages": 0,
                    "done": 0,
                    "status": "not arrived",
                    "wait_s": None,
                    "deferred_s": 0.0,
                }
            )
            continue
        meta, counts = view.meta, view.counts()
        arrived, started = run.sim_s(meta.arrived_ms), run.sim_s(meta.first_started_ms)
        row: dict[str, Any] = {
            "id": spec.id,
            "arrived_s": arrived,
            "first_started_s": started,
            "finished_s": run.sim_s(meta.finished_ms),
            "files": spec.files,
            "messages": meta.total,
            "done": counts.get("done", 0),
            "failed": counts.get("failed", 0),
            "status": meta.status,
            "states": dict(counts),
            # What a PR that did not finish was waiting for: the first few open messages.
            "open": {
                mid: m.model_dump(include={"status", "reason", "retry_at_ms", "line", "dispatch"})
                for mid, m in list(view.current().items())
                if not m.terminal
            }
            if meta.status != "done"
            else {},
            "wait_s": None if started is None or arrived is None else round(started - arrived, 1),
            "deferred_s": _deferred_s(run, meta),
        }
        out.append(row)
    return out


def _deferred_s(run: SimRun, meta: PrMeta) -> float:
    """Simulated seconds the PR's messages waited for off-peak (an open deferral counts
    up to its end or the run's)."""
    ms = meta.deferred_ms
    if meta.deferred_since_ms is not None:
        end = min(meta.deferred_until_ms or run.ended_ms, run.ended_ms)
        ms += max(0, end - meta.deferred_since_ms)
    return round(ms / 1000 * run.scenario.time_scale, 1)


def _account(
    run: SimRun, name: str, stats: dict[str, Any], grants: list[dict[str, Any]], done: int
) -> dict[str, Any]:
    sc = run.scenario
    spec = next(a for a in sc.accounts if a.name == name)
    used: dict[str, int] = defaultdict(int)
    for g in grants:
        if g["account"] == name and not g.get("replayed"):
            for window, cost in g["cost"].items():
                used[window] += cost
    for credit in spec.plan.credit_windows:  # a grant reserves; the settle is the truth
        used[credit.name] = reviewq_charged_milli(run, name, credit.name)
    windows = []
    policy = next((a.policy for a in run.accounts if a.name == name), None)
    for w in stats["windows"]:
        plan_w = next((pw for pw in spec.plan.windows if pw.name == w["name"]), None)
        allowed = _allowed(w, sc.duration)
        spendable = policy.caps(w["limit"])[0] / 1000 if policy is not None else None
        windows.append(
            {
                "name": w["name"],
                "limit": w["limit"] / 1000,
                "spendable": spendable,
                "max_used_in_any_window": w["max_used_in_any_window"] / 1000,
                "used": used.get(w["name"], 0) / 1000 if plan_w else None,
                "utilization": round(used.get(w["name"], 0) / allowed, 4)
                if plan_w and allowed
                else None,
            }
        )
    codes = stats.get("429_by_code", {})
    return {
        "name": name,
        "requests": stats["requests"],
        "provider_429": sum(codes.values()),
        "provider_429_by_code": codes,
        # Quota refusals by cause: `over_plan` is our own over-admission, `shared_quota`
        # a provider quota smaller than the plan (see the simulator's `refusal_cause`).
        "quota_refusals": stats.get("quota_refusals", {}),
        "max_in_flight": stats.get("max_in_flight", {}).get("overall"),
        "windows": windows,
        "plan": spec.plan.name,
        "credits": credit_figures(run, name, stats, done),
    }


def _allowed(window: dict[str, Any], duration_s: float) -> float:
    """Milli-units the window let through over the run: a rolling window its limit per
    duration; a bucket its full start plus every regeneration."""
    limit, length = float(window["limit"]), float(window["duration_s"])
    if window.get("kind") == "regenerating":
        bound = float(window.get("bound") or limit)
        per_tick = bound - limit  # the simulator's bound: limit + regen * ticks per window
        return limit + per_tick * duration_s / length
    return limit * duration_s / length


def _reserve_check(
    run: SimRun, grants: list[dict[str, Any]], timelines: dict[str, ReserveTimeline]
) -> dict[str, Any]:
    """Replay the grants: a grant to a PR beyond its share must not lift a window's
    total above `limit * (1 - headroom - reserve)`, with the reserve in force at the
    grant (an adaptive account's timeline; before its first change, the configured
    one). PR use is rebuilt from the trace."""
    checked = violations = 0
    worst: dict[str, Any] | None = None
    logs: dict[tuple[str, str, str], deque[tuple[int, int]]] = defaultdict(deque)
    accounts = {a.name: a for a in run.accounts}
    for g in grants:
        account = accounts.get(g["account"])
        if account is None or g.get("replayed"):
            continue
        plan = account.effective_plan
        for window in plan.windows:
            cost = g["cost"].get(window.name, 0)
            hi, lo, share = account.policy.caps(window.limit_milli)
            log = logs[(g["account"], window.name, g["pr"])]
            span = window.duration_ms + account.policy.arrival_margin_ms
            while log and log[0][0] + span <= g["t_ms"]:
                log.popleft()
            pr_used = sum(c for _, c in log)
            log.append((g["t_ms"], cost))
            total_after = hi - g["remaining"][window.name]
            g.setdefault("totals", {})[window.name] = total_after / 1000
            if window.kind != "rolling" or pr_used + cost <= share:
                continue
            g["over_share"] = True
            checked += 1
            timeline = timelines.get(g["account"])
            in_force = timeline.candidates(window.name, g["t_ms"]) if timeline else []
            if in_force:  # any reserve that may have been in force at the grant
                lo = max(max(0, hi - m) for m in in_force)
            if total_after > lo:
                violations += 1
                worst = worst or {
                    "t_s": g["t_s"],
                    "pr": g["pr"],
                    "window": window.name,
                    "total_after": total_after / 1000,
                    "line": lo / 1000,
                }
    return {"over_share_grants": checked, "violations": violations, "first_violation": worst}


def _handoff(trace: list[dict[str, Any]]) -> dict[str, Any]:
    """From a released slot to the next grant on that account, where messages stood in
    line and the windows had budget for another request: real milliseconds, the gap a
    polling scheduler would add to."""
    gaps: list[float] = []
    pending: dict[str, int] = {}
    for event in trace:
        account = event["account"]
        if event.get("event") == "release":
            if event.get("waiting", 0) > 0 and event.get("budget_left", True):
                pending[account] = event["t_ms"]
        elif account in pending:
            gaps.append(event["t_ms"] - pending.pop(account))
    return {
        "count": len(gaps),
        "p50": percentile(gaps, 50),
        "p95": percentile(gaps, 95),
        "max": max(gaps) if gaps else None,
    }


def _window_reuse(run: SimRun, grants: list[dict[str, Any]]) -> dict[str, Any]:
    """How soon budget that frees in a full window is granted again: for each grant
    that only fit because older charges expired, real ms from the expiry that made
    room to the grant. Rebuilt from the trace, for rolling windows."""
    lateness: list[float] = []
    logs: dict[tuple[str, str], deque[tuple[int, int]]] = defaultdict(deque)
    accounts = {a.name: a for a in run.accounts}
    for g in grants:
        account = accounts.get(g["account"])
        if account is None or g.get("replayed"):
            continue
        for window in account.effective_plan.windows:
            if window.kind != "rolling":
                continue
            hi, _, _ = account.policy.caps(window.limit_milli)
            span = window.duration_ms + account.policy.arrival_margin_ms
            log, cost = logs[(g["account"], window.name)], g["cost"].get(window.name, 0)
            used, freed_at = sum(c for _, c in log), None
            while log and log[0][0] + span <= g["t_ms"]:
                t, c = log.popleft()
                if used + cost > hi:  # this expiry was needed for the grant to fit
                    freed_at = t + span
                used -= c
            log.append((g["t_ms"], cost))
            if freed_at is not None:
                lateness.append(g["t_ms"] - freed_at)
    return {
        "count": len(lateness),
        "p50": percentile(lateness, 50),
        "p95": percentile(lateness, 95),
        "max": max(lateness) if lateness else None,
    }
