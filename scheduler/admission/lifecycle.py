"""A PR's life as admission sees it: it arrives, is planned, is superseded by a new
head, is cancelled, has its failed messages re-armed, and ends when its review is sent.

Planning replaces a PR's work in one transaction (`submit`): the old head's messages
that have not started are cancelled before they spend anything, and the new head's
first messages are dispatched within the PR's in-flight cap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from scheduler.admission.core import AdmissionCore
from scheduler.admission.offpeak import close_deferral
from scheduler.state.records import REVIEWED_KEPT, MessageState, PrMeta
from scheduler.state.txn import PrTxn

__all__ = ["PrLifecycle"]


class PrLifecycle(AdmissionCore):
    """The moves of a whole PR: register, plan (`submit`), cancel, re-arm, end."""

    def register(self, pr: str, ref: dict[str, Any], head_sha: str) -> PrMeta:
        """Note a PR the moment its event arrives, before planning: arrival time is
        when the user started waiting."""
        now = self.now_ms()
        return self._txn(pr, lambda txn: self.register_in(txn, ref, head_sha, now))

    def register_in(self, txn: PrTxn, ref: dict[str, Any], head_sha: str, now: int) -> PrMeta:
        """`register`'s writes inside a caller's transaction (`intake.enqueue_pr` commits
        them with the plan job). Arrival resets when a finished or cancelled PR comes
        back; the deployment's index forgets PRs whose state has expired, so it never
        outgrows retention."""
        meta = txn.meta or PrMeta(pr=txn.pr, arrived_ms=now)
        if txn.meta is None or meta.status in {"done", "cancelled"}:
            meta.arrived_ms, meta.first_started_ms, meta.finished_ms = now, None, None
        if meta.head_sha != head_sha:
            meta.now = False  # "review it now" was said of the old head
        meta.ref, meta.head_sha, meta.status = dict(ref), head_sha, "planning"
        txn.meta = meta
        txn.meta_dirty |= set(PrMeta.model_fields) - {"pr"}
        prs, pr, keep_s, arrived = self.keys.prs, txn.pr, self.retention.pr_s, meta.arrived_ms
        txn.later(lambda p: p.zadd(prs, {pr: arrived}))
        txn.later(lambda p: p.zremrangebyscore(prs, "-inf", f"({now - keep_s * 1000}"))
        txn.later(lambda p: p.expire(prs, keep_s))
        return meta

    def submit(
        self,
        pr: str,
        head_sha: str,
        bodies: Sequence[str],
        *,
        files: int,
        plan: dict[str, Any],
        estimate: dict[str, int] | None = None,
    ) -> int:
        """Replace the PR's work with `bodies` for `head_sha`; returns the generation.

        Work for an older head that has not started is cancelled before it spends
        anything; running messages finish and are kept, marked stale. A head that is
        planned already (its plan job ran twice: requeued after its worker died, say)
        keeps the plan it has.
        """
        tickets = int(cast(int, self.redis.incrby(self.keys.ticket, len(bodies) or 1)))

        def body(txn: PrTxn) -> int:
            meta = txn.meta or PrMeta(pr=pr, arrived_ms=self.now_ms())
            if meta.status == "cancelled" and meta.head_sha == head_sha:
                return meta.gen  # cancelled while its plan job waited: plan nothing
            if meta.head_sha == head_sha and meta.gen and meta.status != "planning":
                return meta.gen  # planned already: a plan job run twice plans once
            txn.meta = meta
            self._cancel_open(txn, f"superseded by {head_sha[:12]}")
            close_deferral(txn, self.now_ms())
            meta.gen += 1
            meta.head_sha, meta.files, meta.plan = head_sha, files, plan
            meta.estimate = dict(estimate or {})
            meta.total, meta.inflight, meta.cap = len(bodies), 0, self.fairness.cap
            meta.status = "active" if bodies else "finishing"
            meta.finished_ms = None
            txn.meta_dirty |= set(PrMeta.model_fields) - {"pr"}
            mids = [f"{meta.gen}.{n}" for n in range(len(bodies))]
            first = tickets - len(bodies)
            for n, mid in enumerate(mids):
                txn.put(mid, MessageState(gen=meta.gen, order=float(first + n + 1)))
            mapping = dict(zip(mids, bodies, strict=True))
            if mapping:
                txn.later(lambda p: p.hset(self.keys.body(pr), mapping=mapping))
                txn.later(lambda p: p.rpush(self.keys.backlog(pr), *mids))
            arrived = meta.arrived_ms
            txn.later(lambda p: p.zadd(self.keys.prs, {pr: arrived}))
            self._fill(txn, list(mids))
            if not bodies:
                self._finalize(txn)
            return meta.gen

        return self._txn(pr, body)

    def _cancel_open(self, txn: PrTxn, reason: str) -> int:
        """Cancel every message that has not started; running ones are left to finish."""
        cancelled = 0
        for mid, state in txn.msgs.items():
            if state.terminal or state.status == "running":
                continue
            member = f"{txn.pr}|{mid}"
            state.status, state.reason, state.retry_at_ms = "cancelled", reason, None
            txn.put(mid, state)
            self._unlist(txn, member, state.line)
            cancelled += 1
        backlog = self.keys.backlog(txn.pr)
        txn.later(lambda p: p.delete(backlog))
        if txn.meta is not None:
            txn.meta.inflight = 0
            txn.meta_dirty.add("inflight")
        return cancelled

    def _unlist(self, txn: PrTxn, member: str, line: str | None) -> None:
        keys = [self.keys.timed] + ([self.keys.line(line)] if line else [])
        for key in keys:
            txn.later(lambda p, k=key: p.zrem(k, member))  # type: ignore[misc]

    def cancel(self, pr: str, reason: str = "cancelled", *, error: str | None = None) -> int:
        """Cancel a PR's open work (the PR closed, or a person asked); `error` is shown
        on the PR when reviewq itself cannot review it."""

        def body(txn: PrTxn) -> int:
            if txn.meta is None:
                return 0
            count = self._cancel_open(txn, reason)
            if not any(m.status == "running" for m in txn.msgs.values()):
                txn.meta.status, txn.meta.finished_ms = "cancelled", self.now_ms()
                txn.meta_dirty |= {"status", "finished_ms"}
            if error is not None:
                txn.meta.error = error
                txn.meta_dirty.add("error")
            return count

        return self._txn(pr, body)

    def abandon_plan(self, pr: str, head_sha: str, reason: str) -> bool:
        """The plan job of `head_sha` found the PR closed, a draft, or moved on at its
        forge: end the PR, unless a newer head (or a person) took it over meanwhile."""

        def body(txn: PrTxn) -> bool:
            meta = txn.meta
            if meta is None or meta.head_sha != head_sha or meta.status != "planning":
                return False
            meta.status, meta.finished_ms, meta.error = "cancelled", self.now_ms(), reason
            txn.meta_dirty |= {"status", "finished_ms", "error"}
            return True

        return self._txn(pr, body)

    def retry_failed(self, pr: str) -> int:
        """Re-arm the current head's failed messages while its review is still open
        (status `active`); returns how many, 0 for any other status: once finishing,
        the sink keeps one review per head, so new replies would reach nobody.

        Charges: a re-armed message's next call is a new provider call under a new
        request id (`retries` moves on by one, and request ids are `.r<retries>`), so
        the limiter charges it once, and keeps the failed call's charge, which the
        provider counted too. Its error-retry budget is not refilled (a message that
        used it up fails at its next retryable error); `runs` restarts. It rejoins
        the backlog first and is queued within the PR's in-flight cap."""

        def body(txn: PrTxn) -> int:
            meta = txn.meta
            if meta is None or meta.status != "active":
                return 0
            failed = [m for m, s in txn.msgs.items() if s.gen == meta.gen and s.status == "failed"]
            mids = sorted(failed, key=lambda m: int(m.partition(".")[2]))
            for mid in mids:
                state = txn.msgs[mid]
                state.status, state.reason, state.retry_at_ms = "pending", None, None
                state.retries, state.runs, state.tag = state.retries + 1, 0, None
                state.account, state.cost, state.started_ms, state.finished_ms = (
                    None,
                    {},
                    None,
                    None,
                )
                txn.put(mid, state)
            if mids:
                backlog, key = self._backlog(txn), self.keys.backlog(pr)
                txn.later(lambda p: p.lpush(key, *reversed(mids)))
                self._fill(txn, [*mids, *backlog])
            return len(mids)

        return self._txn(pr, body)

    def mark_finished(self, pr: str, gen: int, *, error: str | None = None) -> bool:
        """The review of generation `gen` went to its sink (or could not, `error`)."""
        now = self.now_ms()

        def body(txn: PrTxn) -> bool:
            meta = txn.meta
            if meta is None or meta.gen != gen or meta.status != "finishing":
                return False
            meta.status, meta.finished_ms, meta.error = "done", now, error
            if error is None and meta.head_sha not in meta.reviewed:
                meta.reviewed = [*meta.reviewed, meta.head_sha][-REVIEWED_KEPT:]
            txn.meta_dirty |= {"status", "finished_ms", "error", "reviewed"}
            return True

        return self._txn(pr, body)
