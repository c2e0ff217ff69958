"""Off-peak scheduling: large reviews wait for the cheaper hours, parked in Redis.

On a credit plan with time factors (Z.AI V3: 1x Monday-Friday 14:00-18:00 UTC+8,
0.5x otherwise), a message of a large PR that would run in peak is parked on its own
due time, the next off-peak start, like any message that waits: the job ends at once,
no worker is held, and the waker puts it back on the queue then. The PR's other
messages stay in its backlog meanwhile (its in-flight cap is held by the parked ones).

Never deferred: PRs planned into fewer than `min_messages` messages (their reviewers
are waiting, and they cost little), a PR that has waited `max_defer` since it arrived,
and a PR a person asked for now (`reviewq enqueue --now`, or the PR's `now` label),
which `expedite` also wakes at once if it is already parked.

The decision is made when a worker claims a message, so a large PR that started
off-peak stops at the peak boundary, and one woken from an account's line in peak
waits for off-peak too. When its wait ends, a PR stands in the lines behind the PRs
that arrived meanwhile (`close_deferral`), so the deferred work released at the
off-peak start does not delay the small reviews that arrive then.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

from scheduler.admission.runs import Runs, _owned
from scheduler.quota.plans import Account
from scheduler.quota.timeofday import Calendar
from scheduler.state.keys import split_member
from scheduler.state.records import PrMeta
from scheduler.state.txn import PrTxn

__all__ = ["DEFER_MARK", "Deferral", "OffPeak", "close_deferral", "plan_deferral"]

# How a deferred message's reason starts, so `expedite` and `inspect` can tell it.
DEFER_MARK = "deferred to off-peak"
_COUNTER_TTL_S = 30 * 86_400


@dataclass(frozen=True, slots=True)
class Deferral:
    """Park until `until_ms` (the limiter's clock): the off-peak start `off_peak_ms`
    (calendar epoch ms), or the PR's `max_defer` deadline if that comes first.
    `discount` is the part of a peak price the wait saves (1 - off-peak / peak)."""

    account: str
    until_ms: int
    off_peak_ms: int
    reason: str
    discount: float


def plan_deferral(
    meta: PrMeta, account: Account, calendar: Calendar, now_ms: int
) -> Deferral | None:
    """Whether a message of this PR, claimed at `now_ms`, waits for off-peak."""
    policy, factors = account.offpeak, account.plan.time_factors
    if policy is None or policy.defer == "off" or factors is None or meta.now:
        return None
    if meta.total < policy.min_messages:
        return None
    deadline = meta.arrived_ms + policy.max_defer_ms
    when = calendar.at(now_ms)
    if now_ms >= deadline or not factors.is_peak(when):
        return None
    off_peak = factors.off_peak_start(when)
    until = min(calendar.real_ms_at(off_peak), deadline)
    peak, off = factors.peak_factor, factors.off_peak_factor
    reason = (
        f"{DEFER_MARK} {off_peak:%Y-%m-%d %H:%M} UTC: {meta.total} messages at "
        f"{peak:g}x now, {off:g}x then"
    )
    return Deferral(account.name, until, round(off_peak.timestamp() * 1000), reason, 1 - off / peak)


def close_deferral(txn: PrTxn, now_ms: int) -> None:
    """The PR's current deferral is over: its span joins `deferred_ms`, and under `fair`
    it rejoins the accounts' lines one step behind the message served last (not half a
    step ahead, as a newcomer does). Work that chose to wait for cheaper hours must not,
    woken all at once at the off-peak start, go before the reviews people wait for: a
    PR that arrived meanwhile stands ahead of it."""
    meta = txn.meta
    if meta is None or meta.deferred_since_ms is None:
        return
    served_last = float(cast(bytes | None, txn.pipe.get(txn.keys.vtime)) or 0)
    meta.tag = max(meta.tag, served_last + 1)
    txn.meta_dirty.add("tag")
    meta.deferred_ms += max(0, now_ms - meta.deferred_since_ms)
    meta.deferred_since_ms = meta.deferred_until_ms = meta.deferred_reason = None
    meta.deferred_saved_milli = 0
    txn.meta_dirty |= {
        "deferred_ms",
        "deferred_since_ms",
        "deferred_until_ms",
        "deferred_reason",
        "deferred_saved_milli",
    }
    key, pr = txn.keys.deferred, txn.pr
    txn.later(lambda p: p.zrem(key, pr))


class OffPeak(Runs):
    """Parking a claimed message until off-peak, ending a PR's deferral, and waking
    a PR a person asked for now."""

    def defer(self, member: str, dispatch: int, deferral: Deferral) -> bool:
        """The claimed message waits for off-peak on its own due time (a wait for
        budget: its error-retry budget is untouched)."""
        pr, mid = split_member(member)
        now = self.now_ms()

        def body(txn: PrTxn) -> bool:
            state, meta = txn.msgs.get(mid), txn.meta
            if not _owned(state, dispatch):
                return False
            txn.later(lambda p: p.zrem(self.keys.running, member))
            if meta is None or state.gen != meta.gen:
                return self._drop_stale(txn, mid, state)
            state.status, state.reason = "waiting", deferral.reason
            state.retry_at_ms, state.waits = deferral.until_ms, state.waits + 1
            state.tag = None  # its place in a line is taken afresh when it wakes
            txn.put(mid, state)
            self._note_deferral(txn, meta, deferral, now)
            txn.later(lambda p: p.zadd(self.keys.timed, {member: deferral.until_ms}))
            txn.later(lambda p: p.rpush(self.keys.wake, ""))  # the waker may sleep later
            return True

        return self._txn(pr, body)

    def _note_deferral(self, txn: PrTxn, meta: PrMeta, deferral: Deferral, now: int) -> None:
        left = sum(1 for m in txn.msgs.values() if m.gen == meta.gen and not m.terminal)
        per_message = max(meta.estimate.values(), default=0) / max(1, meta.total)
        if meta.deferred_since_ms is None:
            meta.deferred_since_ms = now
            counted = (self.keys.deferrals, deferral.account)
            txn.later(lambda p: p.hincrby(*counted, 1))
            txn.later(lambda p: p.expire(counted[0], _COUNTER_TTL_S))
        meta.deferred_until_ms, meta.deferred_reason = deferral.until_ms, deferral.reason
        meta.deferred_saved_milli = math.floor(per_message * left * deferral.discount)
        txn.meta_dirty |= {
            "deferred_since_ms",
            "deferred_until_ms",
            "deferred_reason",
            "deferred_saved_milli",
        }
        key, pr, until = self.keys.deferred, txn.pr, deferral.until_ms
        txn.later(lambda p: p.zadd(key, {pr: until}))

    def end_deferral(self, pr: str) -> None:
        """A message of the PR runs undeferred: any deferral of it is over."""
        now = self.now_ms()
        self._txn(pr, lambda txn: close_deferral(txn, now))

    def expedite(self, pr: str) -> int:
        """A person wants this PR reviewed now: it is never deferred again (at this
        head), and its messages parked for off-peak go back on the queue; returns how
        many. A PR reviewq does not hold is left alone (0)."""
        now = self.now_ms()

        def body(txn: PrTxn) -> int:
            meta = txn.meta
            if meta is None:
                return 0
            meta.now = True
            txn.meta_dirty.add("now")
            woken = 0
            for mid, state in txn.msgs.items():
                parked = state.status == "waiting" and (state.reason or "").startswith(DEFER_MARK)
                if parked and state.gen == meta.gen:
                    self._enqueue(txn, mid, state, at_front=True)
                    woken += 1
            close_deferral(txn, now)
            return woken

        return self._txn(pr, body)
