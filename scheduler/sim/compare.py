"""Off-peak scheduling judged against its absence: one scenario run with the
accounts' `offpeak` policies and without, and issue 14's two bars on what came out.

A small PR's wait is mostly how long the in-flight calls ahead of it take, so one
run's p95 moves by about +-30 % between identical runs, three times the bar's 10 %.
`runs` pairs are therefore run alternately and judged on the pooled figures: every
small PR's wait of every run of a side in one p95, the credits of all its runs over
all its messages. Each run's own p95 is kept beside them (`runs_p95_s`).

- credits per reviewed message (the provider's own credit total, over messages done)
  at least `SAVING_BAR` lower with off-peak scheduling;
- small PRs' p95 wait (arrival to first grant, PRs of at most `SMALL_PR_FILES` files)
  within `SMALL_WAIT_BAR` of the run without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scheduler.ops.stats import percentile
from scheduler.sim.report import SMALL_PR_FILES
from scheduler.sim.scenario import Scenario
from scheduler.sim.simulate import run_scenario

__all__ = ["SAVING_BAR", "SMALL_WAIT_BAR", "compare_offpeak", "offpeak_figures"]

SAVING_BAR = 0.35  # issue 14: at least 35 % fewer credits per reviewed message
SMALL_WAIT_BAR = 0.10  # issue 14: small-PR p95 wait within 10 % of the baseline's


def compare_offpeak(sc: Scenario, *, redis_url: str | None = None, runs: int = 1) -> dict[str, Any]:
    """`runs` pairs, alternately with and without, so a drift of the machine's load
    falls on both sides alike."""
    with_offpeak, baseline = [], []
    for _ in range(runs):
        with_offpeak.append(run_scenario(sc, redis_url=redis_url))
        baseline.append(run_scenario(sc, redis_url=redis_url, offpeak=False))
    return offpeak_figures(with_offpeak, baseline)


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    main = result["accounts"][0]
    credits = main.get("credits") or {}
    large = [p for p in result["prs"] if p["files"] > SMALL_PR_FILES]
    return {
        "messages_done": result["messages_done"],
        "messages_total": result["messages_total"],
        "not_finished": result["not_finished"],
        "provider_credits": credits.get("provider_total"),
        "reviewq_settled_credits": credits.get("reviewq_settled_total"),
        "credits_per_message": credits.get("per_message"),
        "deferrals": credits.get("deferrals"),
        "provider_429": main["provider_429"],
        "small_pr_wait_p50_s": result["small_pr_wait_p50_s"],
        "small_pr_wait_p95_s": result["small_pr_wait_p95_s"],
        "small_pr_waits_s": sorted(
            p["wait_s"]
            for p in result["prs"]
            if p["files"] <= SMALL_PR_FILES and p["wait_s"] is not None
        ),
        "large_prs": [
            {k: p[k] for k in ("id", "arrived_s", "first_started_s", "finished_s", "deferred_s")}
            for p in large
        ],
        "windows": main["windows"],
    }


def _pooled(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One side's runs as one: sums, and the p50/p95 of all its small PRs' waits. A
    single run is itself (its own percentiles, as `simulate --json` gives them)."""
    runs = [_summary(r) for r in results]
    first = dict(runs[0])
    first["runs_p95_s"] = [r["small_pr_wait_p95_s"] for r in runs]
    if len(runs) == 1:
        return first
    waits = sorted(w for r in runs for w in r["small_pr_waits_s"])
    credits = [r["provider_credits"] for r in runs]
    done = sum(r["messages_done"] for r in runs)
    total = None if None in credits else sum(credits)
    first |= {
        "messages_done": done,
        "messages_total": sum(r["messages_total"] for r in runs),
        "not_finished": [pr for r in runs for pr in r["not_finished"]],
        "provider_credits": total,
        "reviewq_settled_credits": _sum_or_none(r["reviewq_settled_credits"] for r in runs),
        "credits_per_message": round(total / done, 4) if total is not None and done else None,
        "deferrals": _sum_or_none(r["deferrals"] for r in runs),
        "provider_429": sum(r["provider_429"] for r in runs),
        "small_pr_wait_p50_s": percentile(waits, 50),
        "small_pr_wait_p95_s": percentile(waits, 95),
        "small_pr_waits_s": waits,
    }
    return first


def _sum_or_none(values: Any) -> Any:
    values = list(values)
    return None if None in values else sum(values)


def offpeak_figures(
    with_offpeak: dict[str, Any] | Sequence[dict[str, Any]],
    baseline: dict[str, Any] | Sequence[dict[str, Any]],
) -> dict[str, Any]:
    ons = [with_offpeak] if isinstance(with_offpeak, dict) else list(with_offpeak)
    offs = [baseline] if isinstance(baseline, dict) else list(baseline)
    on, off = _pooled(ons), _pooled(offs)
    saving = None
    if on["credits_per_message"] and off["credits_per_message"]:
        saving = round(1 - on["credits_per_message"] / off["credits_per_message"], 4)
    p95_on, p95_off = on["small_pr_wait_p95_s"], off["small_pr_wait_p95_s"]
    ratio = None if p95_on is None or not p95_off else round(p95_on / p95_off, 4)
    wait_met = (
        p95_on is not None and p95_off is not None and p95_on <= p95_off * (1 + SMALL_WAIT_BAR)
    )
    return {
        "runs": len(ons),
        "with_offpeak": on,
        "without_offpeak": off,
        "small_pr_wait_p95_ratio_by_run": [
            None if a is None or not b else round(a / b, 4)
            for a, b in zip(on["runs_p95_s"], off["runs_p95_s"], strict=True)
        ],
        "credits_per_message_saving": saving,
        "small_pr_wait_p95_ratio": ratio,
        "bars": {
            "saving_at_least": SAVING_BAR,
            "saving_met": saving is not None and saving >= SAVING_BAR,
            "small_wait_p95_within": SMALL_WAIT_BAR,
            "small_wait_met": wait_met,
        },
    }
