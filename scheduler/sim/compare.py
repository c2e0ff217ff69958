"""Off-peak scheduling judged against its absence: one scenario run twice, with the
accounts' `offpeak` policies and without, and issue 14's two bars on what came out.

- credits per reviewed message (the provider's own credit total, over messages done)
  at least `SAVING_BAR` lower with off-peak scheduling;
- small PRs' p95 wait (arrival to first grant, PRs of at most `SMALL_PR_FILES` files)
  within `SMALL_WAIT_BAR` of the run without it.
"""

from __future__ import annotations

from typing import Any

from scheduler.sim.report import SMALL_PR_FILES
from scheduler.sim.scenario import Scenario
from scheduler.sim.simulate import run_scenario

__all__ = ["SAVING_BAR", "SMALL_WAIT_BAR", "compare_offpeak", "offpeak_figures"]

SAVING_BAR = 0.35  # issue 14: at least 35 % fewer credits per reviewed message
SMALL_WAIT_BAR = 0.10  # issue 14: small-PR p95 wait within 10 % of the baseline's


def compare_offpeak(sc: Scenario, *, redis_url: str | None = None) -> dict[str, Any]:
    with_offpeak = run_scenario(sc, redis_url=redis_url)
    baseline = run_scenario(sc, redis_url=redis_url, offpeak=False)
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


def offpeak_figures(with_offpeak: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    on, off = _summary(with_offpeak), _summary(baseline)
    saving = None
    if on["credits_per_message"] and off["credits_per_message"]:
        saving = round(1 - on["credits_per_message"] / off["credits_per_message"], 4)
    p95_on, p95_off = on["small_pr_wait_p95_s"], off["small_pr_wait_p95_s"]
    ratio = None if p95_on is None or not p95_off else round(p95_on / p95_off, 4)
    wait_met = (
        p95_on is not None and p95_off is not None and p95_on <= p95_off * (1 + SMALL_WAIT_BAR)
    )
    return {
        "with_offpeak": on,
        "without_offpeak": off,
        "credits_per_message_saving": saving,
        "small_pr_wait_p95_ratio": ratio,
        "bars": {
            "saving_at_least": SAVING_BAR,
            "saving_met": saving is not None and saving >= SAVING_BAR,
            "small_wait_p95_within": SMALL_WAIT_BAR,
            "small_wait_met": wait_met,
        },
    }
