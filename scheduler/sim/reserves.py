"""The adaptive reserve over a `simulate` run: what was in force when, per account.

Read from each account's reserve history (lua/reserve.lua keeps every change with the
limiter's time), so the report can chart it and the reserve check can hold each grant
to the reserve in force when it was made, rather than to the configured one.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scheduler.admission import Admission
from scheduler.quota.limiter import Limiter
from scheduler.quota.plans import Account
from scheduler.waker.reserve import ReserveController

if TYPE_CHECKING:
    from scheduler.sim.run import SimRun

__all__ = [
    "SIM_HISTORY_KEPT",
    "ReserveTimeline",
    "reserve_summary",
    "reserve_timelines",
    "sim_controller",
]

# Enough for a whole run: a change per interval (a minute, simulated) over weeks.
SIM_HISTORY_KEPT = 100_000


def sim_controller(
    admission: Admission, accounts: list[Account], key_prefix: str
) -> ReserveController | None:
    """The waker's controller for a run: as a deployment's, but keeping every change
    of the reserve, for the report and the reserve check."""
    return ReserveController.for_accounts(
        admission, accounts, key_prefix=key_prefix, keep=SIM_HISTORY_KEPT
    )


@dataclass(frozen=True, slots=True)
class ReserveTimeline:
    """One account's changes of the reserve in force: times (limiter ms) and, for each,
    the reserve per window (milli-units)."""

    times: list[int]
    values: list[dict[str, int]]

    def candidates(self, window: str, t_ms: int) -> list[int]:
        """The reserves that may have been in force at `t_ms`: the last change before,
        and any change in that same millisecond (a grant and a change in one ms are in
        an order the trace cannot tell). Empty before the first change."""
        i = bisect_right(self.times, t_ms)
        out = [v[window] for t, v in zip(self.times[:i], self.values[:i], strict=True) if t == t_ms]
        before = [v for t, v in zip(self.times[:i], self.values[:i], strict=True) if t < t_ms]
        if before:
            out.append(before[-1].get(window, 0))
        return out

    def as_json(self, run: SimRun) -> list[dict[str, Any]]:
        return [
            {"t_s": run.sim_s(t), "reserve": {w: m / 1000 for w, m in v.items()}}
            for t, v in zip(self.times, self.values, strict=True)
        ]


def reserve_timelines(run: SimRun) -> dict[str, ReserveTimeline]:
    """Every adaptive account's timeline (accounts without one keep their fixed reserve)."""
    out = {}
    for account in run.accounts:
        if account.policy.adaptive is None:
            continue
        lim = Limiter(run.redis, account, key_prefix=run.limiter_prefix)
        history = lim.reserve_history()
        out[account.name] = ReserveTimeline([t for t, _ in history], [v for _, v in history])
    return out


def reserve_summary(run: SimRun, timelines: dict[str, ReserveTimeline]) -> dict[str, Any]:
    """Per adaptive account: its changes over time (simulated s, units) and, per
    window, the least, most and time-weighted mean reserve in force."""
    out: dict[str, Any] = {}
    for name, tl in timelines.items():
        account = next(a for a in run.accounts if a.name == name)
        stats = {}
        for w in account.effective_plan.windows:
            series = [v.get(w.name, 0) for v in tl.values]
            ends = [*tl.times[1:], run.ended_ms]
            spans = [max(0, e - t) for t, e in zip(tl.times, ends, strict=True)]
            mean = sum(s * v for s, v in zip(spans, series, strict=True)) / max(1, sum(spans))
            stats[w.name] = {
                "limit": w.limit_milli / 1000,
                "min": min(series, default=0) / 1000,
                "max": max(series, default=0) / 1000,
                "mean": round(mean / 1000, 3),
            }
        out[name] = {"windows": stats, "history": tl.as_json(run)}
    return out
