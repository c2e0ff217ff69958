"""A credit plan's figures in a `simulate` report: the provider's own credit total
beside reviewq's, how the learned input bound fared, and the off-peak deferrals.

reviewq's total is its workers' charge ledger (`scheduler.quota.ledger`): every grant,
less what each settle and refund gave back, over the whole run (the limiter forgets a
charge once it leaves the plan's longest window, which a long run outlasts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from scheduler.quota.ledger import ChargeLedger
from scheduler.quota.tokenbound import InputBound

if TYPE_CHECKING:
    from scheduler.sim.run import SimRun

__all__ = ["credit_figures", "reviewq_charged_milli"]


def reviewq_charged_milli(run: SimRun, account: str, window: str) -> int:
    """Milli-units reviewq's workers charged `window` in the run, after every settle."""
    ledger = ChargeLedger(run.redis, account, key_prefix=run.limiter_prefix)
    return ledger.totals().get(window, 0)


def credit_figures(
    run: SimRun, name: str, stats: dict[str, Any], messages_done: int
) -> dict[str, Any] | None:
    """None for an account whose plan has no credit window."""
    account = next(a for a in run.accounts if a.name == name)
    windows = account.effective_plan.credit_windows
    if not windows:
        return None
    provider = stats.get("credits_charged", 0)
    ours = reviewq_charged_milli(run, name, windows[0].name)
    bound = InputBound(run.redis, name, key_prefix=run.limiter_prefix)
    calls = [
        {
            "model": b.model,
            "calls": b.calls,
            "exceeded": b.exceeded,
            "exceeded_share": round(b.exceeded / b.calls, 5) if b.calls else None,
            "max_ratio": round(b.max_ratio, 4),
            "factor": round(b.factor, 4),
        }
        for b in bound.stats()
    ]
    deferrals = run.redis.hget(run.admission.keys.deferrals, name)
    return {
        "provider_total": provider / 1000,
        "reviewq_settled_total": ours / 1000,
        "difference_pct": round(100 * (ours - provider) / provider, 3) if provider else None,
        "per_message": round(provider / 1000 / messages_done, 4) if messages_done else None,
        "tokens": stats.get("tokens", {}),
        "input_bound": calls,
        "deferrals": int(cast(bytes, deferrals)) if deferrals else 0,
    }
