"""The adaptive reserve's controller, run by the waker (docs/reserve.md).

Every `interval` it reads the PRs that arrived within the lookback (their arrival,
estimated cost per window and whether their work is open), each open PR's use from the
limiter, sizes each window's reserve (`scheduler.quota.reserve.size_reserve`) and puts
it in force with one script call. The limiter's Lua applies it at each grant; nothing
here decides a grant, so a controller that stops (a dead waker, a Redis outage) leaves
the last reserve in force, and an account whose state expired falls back to the
configured fixed `reserve`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import cast

from scheduler.admission import Admission
from scheduler.quota.limiter import LIMITER_PREFIX, Limiter
from scheduler.quota.plans import Account
from scheduler.quota.reserve import (
    AdaptiveReserve,
    Demand,
    PrDemand,
    bursts,
    lend_until,
    size_reserve,
)

__all__ = ["HISTORY_KEPT", "ReserveController"]

log = logging.getLogger(__name__)

# Changes of the reserve kept per account for `inspect` and the grant trace check: at
# the default one-minute interval, most of a day of changes.
HISTORY_KEPT = 1000
_OPEN = frozenset({b"planning", b"active"})


class ReserveController:
    """Sizes the reserve of every account whose policy is `adaptive`."""

    def __init__(
        self, admission: Admission, limiters: Sequence[Limiter], *, keep: int = HISTORY_KEPT
    ) -> None:
        self.admission, self.redis, self.keep = admission, admission.redis, keep
        self.limiters = [lim for lim in limiters if lim.policy.adaptive is not None]
        self._next: dict[str, int] = {}
        self.last: dict[str, dict[str, Demand]] = {}

    @classmethod
    def for_accounts(
        cls,
        admission: Admission,
        accounts: Sequence[Account],
        *,
        key_prefix: str = LIMITER_PREFIX,
        keep: int = HISTORY_KEPT,
    ) -> ReserveController | None:
        """A controller for the adaptive accounts among `accounts`; None if there are
        none (the waker then has nothing to do for reserves)."""
        limiters = [
            Limiter(admission.redis, a, key_prefix=key_prefix)
            for a in accounts
            if a.policy.adaptive is not None
        ]
        return cls(admission, limiters, keep=keep) if limiters else None

    def next_due(self) -> int:
        """Redis ms of the soonest account due (0: one has never run)."""
        return min((self._next.get(lim.account, 0) for lim in self.limiters), default=0)

    def step(self, now: int) -> int:
        """Size the reserve of each account that is due; returns how many were set."""
        due = [lim for lim in self.limiters if self._next.get(lim.account, 0) <= now]
        if not due:
            return 0
        lookback = max(_lookback(lim) for lim in due)
        prs = self._recent_prs(now, lookback)
        for lim in due:
            self.size(lim, prs, now)
            self._next[lim.account] = now + _adaptive(lim).interval_ms
        return len(due)

    def size(self, lim: Limiter, prs: dict[str, PrDemand], now: int) -> dict[str, Demand]:
        """Put `lim`'s reserve in force from `prs` (their use read from `lim`)."""
        adaptive = _adaptive(lim)
        # Large PRs never spend the reserve (`Limiter.is_large`), so they are no demand.
        small = {pr: d for pr, d in prs.items() if not lim.is_large(d.estimate)}
        used = lim.pr_use([pr for pr, d in small.items() if d.open])
        rows = [
            PrDemand(d.arrived_ms, d.estimate, used.get(pr, {}), d.open) for pr, d in small.items()
        ]
        sized: dict[str, Demand] = {}
        durations = [w.duration_ms for w in lim.plan.windows]
        horizon, span = adaptive.horizon_for(durations), min(durations, default=1)
        seen = bursts((r.arrived_ms for r in rows), now, horizon, span)
        back_by = lend_until(seen, now, adaptive.lend_within_ms)
        leaving = {} if back_by is None else self._leaving(lim, back_by, now)
        for w in lim.plan.windows:
            share = lim.policy.caps(w.limit_milli)[2]
            bounds = lim.policy.reserve_bounds(w.limit_milli)
            sized[w.name] = size_reserve(
                rows,
                now,
                w.name,
                share,
                bounds,
                horizon,
                span,
                window_ms=w.duration_ms + lim.policy.arrival_margin_ms,  # as enforced
                seen=seen,
                back_by=back_by,
                leaving=leaving.get(w.name, 0),
                interval_ms=adaptive.interval_ms,
            )
        demand = {
            "at_ms": now,
            "next_burst_ms": seen.due if seen else None,
            "back_by_ms": back_by,
            "windows": {n: d.as_dict() for n, d in sized.items()},
        }
        lim.set_reserve(
            {n: d.reserve for n, d in sized.items()},
            json.dumps(demand, separators=(",", ":")),
            self.keep,
        )
        self.last[lim.account] = sized
        return sized

    @staticmethod
    def _leaving(lim: Limiter, back_by: int, now: int) -> dict[str, int]:
        """What leaves each window by `back_by` and is still there an interval from now
        (`Limiter.leaving`): the room lent now that comes back in time anyway. Windows
        are as enforced, arrival margin included, so the margin is never lent."""
        names = [w.name for w in lim.plan.windows]
        interval = _adaptive(lim).interval_ms
        return lim.leaving(dict.fromkeys(names, back_by), interval, now_ms=now)

    def _recent_prs(self, now: int, lookback_ms: int) -> dict[str, PrDemand]:
        """PRs that arrived within `lookback_ms`: one read of the arrivals, one of their
        metas (pipelined). A PR's use is filled in per account, by `size`."""
        keys = self.admission.keys
        raw = cast(list[bytes], self.redis.zrangebyscore(keys.prs, now - lookback_ms, "+inf"))
        prs = [m.decode() for m in raw]
        with self.redis.pipeline(transaction=False) as pipe:
            for pr in prs:
                pipe.hmget(keys.meta(pr), ["arrived_ms", "status", "estimate"])
            metas = cast(list[list[bytes | None]], pipe.execute())
        out: dict[str, PrDemand] = {}
        for pr, (arrived, status, estimate) in zip(prs, metas, strict=True):
            if arrived is None:
                continue  # its state expired; the arrival entry is a leftover
            out[pr] = PrDemand(int(arrived), _estimate(estimate), {}, status in _OPEN)
        return out


def _adaptive(lim: Limiter) -> AdaptiveReserve:
    adaptive = lim.policy.adaptive
    assert adaptive is not None  # the controller keeps only adaptive accounts
    return adaptive


def _lookback(lim: Limiter) -> int:
    """How far back PRs are read: the horizon, and an open PR's work under its share
    counts until the longest window it could have spent in has passed."""
    durations = [w.duration_ms for w in lim.plan.windows]
    return max(_adaptive(lim).horizon_for(durations), max(durations, default=0))


def _estimate(raw: bytes | None) -> dict[str, int]:
    """A PR's estimated cost per window (milli-units) as planning stored it; anything
    unreadable counts as no estimate, never as a crash of the waker."""
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): int(v) for k, v in data.items() if isinstance(v, int | float)}
