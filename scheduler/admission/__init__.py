"""Admission: which of a PR's messages may be on the queue, and what waits for budget.

Every transition of a message is one Redis transaction (WATCH on the PR's keys, then
MULTI/EXEC), and a transition that dispatches a message creates its RQ job inside the
same transaction, so a crash can never leave a message marked queued without a job,
or a job without its message marked queued.

Fairness has two parts. A PR may have at most `per_pr_inflight` messages queued,
running or waiting at once (`fifo`: no cap), so a 300-message PR does not put 300 jobs
in front of everyone. And messages that wait for an account stand in that account's
*line*: under `fair` in start-time fair order (each PR's next message is placed one
step after its previous one, a newcomer half a step ahead of the message served last), under
`fifo` by ticket. When a slot frees, the waker moves the line's head straight onto the
queue: no polling gap. Messages that wait for a reason of their own (their PR is over
its share, an error backoff) wait on their own due time instead, so they never block
the head of a line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard, TypeVar, cast

import redis as redis_lib
from rq import Queue

from scheduler.config.review import Fairness
from scheduler.state.jobs import FINALIZE_JOB, REVIEW_JOB
from scheduler.state.records import (
    REVIEWED_KEPT,
    TERMINAL,
    Keys,
    MessageState,
    PrMeta,
    Retention,
    decode_messages,
    decode_meta,
    queued_entry,
    split_member,
)
from scheduler.state.txn import PrTxn, run_txn

__all__ = ["FINALIZE_JOB", "REVIEW_JOB", "Admission", "Claimed", "Fairness", "job_id_for"]

T = TypeVar("T")
# A job that dies without a word is noticed when its claim lapses; after this many
# lapsed runs the message fails instead of crashing workers forever. Only lapses
# count: a message that waited for budget ten times has run (been claimed) ten times.
MAX_RUNS = 6


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message a worker now owns until `deadline_ms` (renewed by its heartbeat)."""

    pr: str
    mid: str
    state: MessageState
    body: str
    meta: PrMeta


def _owned(state: MessageState | None, dispatch: int) -> TypeGuard[MessageState]:
    """Whether the worker that claimed run `dispatch` may still park or finish it.

    `running` under that dispatch, normally. `queued` under it too: only a claim makes
    a worker call park or finish, so a message back at `queued` with the same dispatch
    had its claim forgotten (Redis lost its last writes in a crash); nobody else can
    run this dispatch, and refusing would leave the message queued with no job left.
    A reaped, re-woken or re-dispatched (`redispatch`) message has moved on to a new
    dispatch and is refused."""
    return state is not None and state.dispatch == dispatch and state.status in _OWNED


_OWNED = frozenset({"running", "queued"})


def job_id_for(prefix: str, member: str, dispatch: int, kind: str = "msg") -> str:
    """RQ job ids allow only `[A-Za-z0-9_-]`; PR ids have `/` and `#`.

    RQ keeps every job at `rq:job:<id>`, whatever its queue, so the id carries the
    deployment's prefix: two deployments (or two `simulate` runs) on one Redis would
    otherwise share ids for the same PR, and a new job would inherit the old one's
    result TTL and vanish from the queue before it ran."""
    digest = hashlib.sha1(f"{prefix}\n{member}".encode()).hexdigest()[:20]
    return f"rq-{kind}-{digest}-{dispatch}"


class Admission:
    """The only code that changes PR and message state (see `scheduler.state.records`)."""

    def __init__(
        self,
        redis: redis_lib.Redis,
        queue: Queue,
        *,
        prefix: str,
        fairness: Fairness | None = None,
        job_timeout_s: int = 900,
        fallback_ms: int = 5_000,
        retention: Retention | None = None,
    ) -> None:
        self.redis, self.queue = redis, queue
        self.fairness = fairness or Fairness()
        self.retention = retention or Retention()
        self.keys = Keys(prefix, self.retention.pr_s)
        self.job_timeout_s = job_timeout_s
        self.fallback_ms = fallback_ms

    def now_ms(self) -> int:
        """Redis's clock, the one the limiter uses: worker clocks may be skewed."""
        sec, usec = cast(tuple[int, int], self.redis.time())
        return sec * 1000 + usec // 1000

    def _txn(self, pr: str, body: Callable[[PrTxn], T], watch: Sequence[str] = ()) -> T:
        return run_txn(self.redis, self.keys, pr, body, watch)

    def _enqueue(self, txn: PrTxn, mid: str, state: MessageState, *, at_front: bool) -> None:
        """Queue one run of a message: a fresh RQ job for its next dispatch number."""
        member = f"{txn.pr}|{mid}"
        state.dispatch += 1
        state.status, state.line = "queued", None
        txn.put(mid, state)
        dispatch = state.dispatch
        txn.later(lambda p: p.zrem(self.keys.timed, member))
        entry = queued_entry(member, dispatch)
        txn.later(lambda p: p.zadd(self.keys.queued, {entry: 0}))
        txn.later(
            lambda p: self.queue.enqueue_call(
                REVIEW_JOB,
                args=(self.keys.prefix, member, dispatch),
                job_id=job_id_for(self.keys.prefix, member, dispatch),
                timeout=self.job_timeout_s,
                result_ttl=self.retention.result_s,
                failure_ttl=self.retention.failure_s,
                description=f"review {member} run {dispatch}",
                at_front=at_front,
                pipeline=p,
            )
        )

    def _fill(self, txn: PrTxn, backlog: list[str]) -> None:
        """Dispatch pending messages while the PR is under its in-flight cap."""
        meta = txn.meta
        assert meta is not None
        key = self.keys.backlog(txn.pr)
        while backlog and (meta.cap == 0 or meta.inflight < meta.cap):
            mid = backlog.pop(0)
            state = txn.msgs.get(mid)
            txn.later(lambda p: p.lpop(key))
            if state is None or state.status != "pending" or state.gen != meta.gen:
                continue
            meta.inflight += 1
            txn.meta_dirty.add("inflight")
            self._enqueue(txn, mid, state, at_front=False)

    def _backlog(self, txn: PrTxn) -> list[str]:
        raw = cast(list[bytes], txn.pipe.lrange(self.keys.backlog(txn.pr), 0, -1))
        return [m.decode() for m in raw]

    # -- a PR arrives, is planned, is superseded or cancelled -------------------------

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
        tickets = int(cast(int, self.redis.incrby(f"{self.keys.prefix}:ticket", len(bodies) or 1)))

        def body(txn: PrTxn) -> int:
            meta = txn.meta or PrMeta(pr=pr, arrived_ms=self.now_ms())
            if meta.status == "cancelled" and meta.head_sha == head_sha:
                return meta.gen  # cancelled while its plan job waited: plan nothing
            if meta.head_sha == head_sha and meta.gen and meta.status != "planning":
                return meta.gen  # planned already: a plan job run twice plans once
            txn.meta = meta
            self._cancel_open(txn, f"superseded by {head_sha[:12]}")
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

    # -- a worker takes, parks and finishes a message ---------------------------------

    def claim(self, member: str, dispatch: int, claim_ms: int) -> Claimed | None:
        """Take a queued message for this dispatch; None if the token is stale."""
        pr, mid = split_member(member)
        now = self.now_ms()

        def body(txn: PrTxn) -> Claimed | None:
            state, meta = txn.msgs.get(mid), txn.meta
            if state is None or meta is None:
                return None
            if state.status != "queued" or state.dispatch != dispatch:
                return None
            state.status, state.reason, state.retry_at_ms = "running", None, None
            state.runs += 1
            txn.put(mid, state)
            txn.later(lambda p: p.zadd(self.keys.running, {member: now + claim_ms}))
            txn.later(lambda p: p.zrem(self.keys.queued, queued_entry(member, dispatch)))
            raw = cast(bytes | None, txn.pipe.hget(self.keys.body(pr), mid))
            return Claimed(pr, mid, state, (raw or b"").decode(), meta)

        return self._txn(pr, body)

    def note_started(self, member: str) -> None:
        """The message got budget: its review (and its PR's) has really started. A
        claim alone is not a start; the budget may still say wait."""
        pr, mid = split_member(member)
        now = self.now_ms()

        def body(txn: PrTxn) -> None:
            state, meta = txn.msgs.get(mid), txn.meta
            if state is not None and state.started_ms is None:
                state.started_ms = now
                txn.put(mid, state)
            if meta is not None and meta.first_started_ms is None:
                meta.first_started_ms = now
                txn.meta_dirty.add("first_started_ms")

        self._txn(pr, body)

    def heartbeat(self, member: str, dispatch: int, claim_ms: int) -> bool:
        """Push a running message's claim deadline on; False if it was taken away.

        A claim Redis forgot in a crash (the message is back at `queued` under this
        dispatch) is taken again here, before the waker decides the run was lost
        (`redispatch` waits a whole `claim_ms`; beats come every third of it)."""
        now = self.now_ms()
        updated = self.redis.zadd(self.keys.running, {member: now + claim_ms}, xx=True, ch=True)
        return bool(updated) or self._reclaim(member, dispatch, now + claim_ms)

    def _reclaim(self, member: str, dispatch: int, deadline_ms: int) -> bool:
        pr, mid = split_member(member)

        def body(txn: PrTxn) -> bool:
            state = txn.msgs.get(mid)
            if state is None or state.dispatch != dispatch or state.status != "queued":
                return False
            state.status = "running"
            txn.put(mid, state)
            txn.later(lambda p: p.zadd(self.keys.running, {member: deadline_ms}))
            txn.later(lambda p: p.zrem(self.keys.queued, queued_entry(member, dispatch)))
            return True

        return self._txn(pr, body)

    def park(
        self,
        member: str,
        dispatch: int,
        *,
        until_ms: int,
        reason: str,
        line: str | None,
        error_retry: bool = False,
        since_ms: int | None = None,
    ) -> bool:
        """A running message waits: in `line`'s line (an account-wide reason), or on
        its own due time. An error retry counts against the retry budget; a wait for
        budget never does.

        `since_ms` is when the run began asking for budget. A slot of `line` that
        freed since then was signalled before this message stood in the line, so
        that wake-up found no one; the message then asks for its own (see
        `_join_line`), or it would wait for its due time with the slot idle."""
        pr, mid = split_member(member)

        def body(txn: PrTxn) -> bool:
            state = txn.msgs.get(mid)
            if not _owned(state, dispatch):
                return False
            txn.later(lambda p: p.zrem(self.keys.running, member))
            if txn.meta is None or state.gen != txn.meta.gen:
                return self._drop_stale(txn, mid, state)
            state.status, state.reason, state.retry_at_ms = "waiting", reason, until_ms
            if error_retry:
                state.retries += 1
            else:
                state.waits += 1
            # The waker may be asleep until a later due time than this one: an empty
            # wake-up makes it read the due times again (it wakes no line).
            wake = ""
            if line is None:
                txn.later(lambda p: p.zadd(self.keys.timed, {member: until_ms}))
            else:
                self._join_line(txn, member, state, line, until_ms)
                wake = line if self._freed_since(txn, line, since_ms) else ""
            txn.later(lambda p: p.rpush(self.keys.wake, wake))
            txn.put(mid, state)
            return True

        watch = (self.keys.freed,) if line is not None else ()
        return self._txn(pr, body, watch)

    def _join_line(self, txn: PrTxn, member: str, state: MessageState, line: str, due: int) -> None:
        meta = txn.meta
        assert meta is not None
        if self.fairness.mode == "fair" and state.tag is None:
            # Start-time fair queueing: one step after this PR's previous message, but
            # not before the message served last, except that a newcomer goes half a
            # step ahead of it: that message may have been woken and refused, and is
            # back at the head of the line with the same tag.
            vt = float(cast(bytes | None, txn.pipe.get(self.keys.vtime)) or 0)
            meta.tag = max(vt - 0.5, meta.tag + 1)
            txn.meta_dirty.add("tag")
            state.tag = meta.tag
        state.line = line
        order = (state.tag if self.fairness.mode == "fair" else state.order) or 0.0
        txn.later(lambda p: p.zadd(self.keys.line(line), {member: order}))
        # LT alone adds a missing member too (Redis >= 6.2): the line's due only moves in.
        txn.later(lambda p: p.zadd(self.keys.line_due, {line: due}, lt=True))

    def _freed_since(self, txn: PrTxn, line: str, since_ms: int | None) -> bool:
        """Did a slot of `line` free at or after `since_ms` while its line was empty?
        Only then did that wake-up find no one. If others stand in the line, the
        wake-up moved its head, or the first of them to join after it (with an earlier
        start) wakes the line itself; waking again would only churn the line. Read
        under WATCH (see `park`), so a signal before EXEC reruns the transaction."""
        if since_ms is None:
            return False
        freed = cast(float | None, txn.pipe.zscore(self.keys.freed, line))
        if freed is None or freed < since_ms:
            return False
        return not txn.pipe.zcard(self.keys.line(line))  # before this message joins

    def _drop_stale(self, txn: PrTxn, mid: str, state: MessageState) -> bool:
        """A message of a superseded head that was running: it will not run again."""
        state.status, state.reason, state.stale = "cancelled", "superseded while running", True
        txn.put(mid, state)
        return True

    def finish(
        self,
        member: str,
        dispatch: int,
        *,
        ok: bool,
        reason: str | None,
        account: str | None,
        cost: dict[str, int],
        reply: str | None,
    ) -> bool:
        """A message ends: done (its reply kept) or failed. Frees its PR's slot, which
        dispatches the PR's next message; the last one queues the PR's finalize job."""
        pr, mid = split_member(member)
        now = self.now_ms()

        def body(txn: PrTxn) -> bool:
            state, meta = txn.msgs.get(mid), txn.meta
            if not _owned(state, dispatch):
                return False
            txn.later(lambda p: p.zrem(self.keys.running, member))
            state.status = "done" if ok else "failed"
            state.reason, state.account, state.cost = reason, account, dict(cost)
            state.finished_ms, state.retry_at_ms = now, None
            if reply is not None:
                txn.later(lambda p: p.hset(self.keys.reply(pr), mid, reply))
            if meta is None or state.gen != meta.gen:
                state.stale = True
                txn.put(mid, state)
                return True
            txn.put(mid, state)
            meta.inflight = max(0, meta.inflight - 1)
            txn.meta_dirty.add("inflight")
            self._fill(txn, self._backlog(txn))
            if all(m.terminal for m in txn.msgs.values() if m.gen == meta.gen):
                self._finalize(txn)
            return True

        return self._txn(pr, body)

    def _finalize(self, txn: PrTxn) -> None:
        meta = txn.meta
        assert meta is not None
        meta.status = "finishing"
        txn.meta_dirty.add("status")
        pr, gen = txn.pr, meta.gen
        txn.later(
            lambda p: self.queue.enqueue_call(
                FINALIZE_JOB,
                args=(self.keys.prefix, pr, gen),
                job_id=job_id_for(self.keys.prefix, pr, gen, "fin"),
                timeout=self.job_timeout_s,
                result_ttl=self.retention.result_s,
                failure_ttl=self.retention.failure_s,
                description=f"finalize {pr} gen {gen}",
                pipeline=p,
            )
        )

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

    # -- the waker moves waiting messages back onto the queue -------------------------

    def wake(self, member: str, line: str | None = None) -> bool:
        """A waiting message goes back on the queue (front: it has waited longest).

        `line`: the line the waker found it at the head of. A member that is not
        waiting there is a leftover and leaves that line in this same transaction, so
        it cannot take out the entry of a message that parked there again meanwhile."""
        pr, mid = split_member(member)

        def body(txn: PrTxn) -> bool:
            state = txn.msgs.get(mid)
            if state is None or state.status != "waiting" or (line and state.line != line):
                if state is None or state.status != "waiting":
                    txn.later(lambda p: p.zrem(self.keys.timed, member))
                if line:
                    txn.later(lambda p: p.zrem(self.keys.line(line), member))
                return False
            if state.line:
                line_key = self.keys.line(state.line)
                txn.later(lambda p: p.zrem(line_key, member))
                if self.fairness.mode == "fair" and state.tag is not None:
                    vt = float(cast(bytes | None, txn.pipe.get(self.keys.vtime)) or 0)
                    new_vt = repr(max(vt, state.tag))
                    txn.later(lambda p: p.set(self.keys.vtime, new_vt))
            self._enqueue(txn, mid, state, at_front=True)
            return True

        return self._txn(pr, body)

    def reap(self, member: str, now_ms: int) -> bool:
        """A claim lapsed (its worker died): run the message again. Its request id is
        unchanged, so the limiter replays its charge instead of charging twice."""
        pr, mid = split_member(member)

        def body(txn: PrTxn) -> bool:
            state = txn.msgs.get(mid)
            score = cast(float | None, txn.pipe.zscore(self.keys.running, member))
            if state is None or state.status != "running" or score is None or score > now_ms:
                if state is None or state.status != "running":
                    txn.later(lambda p: p.zrem(self.keys.running, member))
                return False
            txn.later(lambda p: p.zrem(self.keys.running, member))
            if txn.meta is None or state.gen != txn.meta.gen:
                return self._drop_stale(txn, mid, state)
            self._rerun(txn, mid, state, now_ms, "its worker stopped answering")
            return True

        return self._txn(pr, body)

    def _rerun(self, txn: PrTxn, mid: str, state: MessageState, now_ms: int, why: str) -> None:
        """Queue a lost run again, or fail the message once runs were lost `MAX_RUNS`
        times: a message that kills its worker, or whose job always dies, must not
        cycle forever."""
        meta = txn.meta
        assert meta is not None
        state.lost += 1
        if state.lost < MAX_RUNS:
            state.reason = f"{why}; running it again"
            self._enqueue(txn, mid, state, at_front=True)
            return
        state.status, state.reason = "failed", f"{why}: run lost {state.lost} times"
        state.finished_ms = now_ms
        txn.put(mid, state)
        meta.inflight = max(0, meta.inflight - 1)
        txn.meta_dirty.add("inflight")
        self._fill(txn, self._backlog(txn))
        if all(m.terminal for m in txn.msgs.values() if m.gen == meta.gen):
            self._finalize(txn)

    def redispatch(self, member: str, dispatch: int, now_ms: int) -> bool:
        """Run `dispatch` of a message again under a new dispatch: its job is gone.

        Redis can lose its last second of writes in a crash (AOF `everysec`): a
        worker's pop of the job, or its claim, while the message stays `queued` at
        this dispatch. Nothing else would ever run it (the reaper only sees claims).
        A wrong guess costs one job: the old one, if it still runs, finds its
        dispatch stale and does nothing. The request id is unchanged, so the limiter
        replays a charge the lost run had taken instead of charging twice."""
        pr, mid = split_member(member)
        entry = queued_entry(member, dispatch)

        def body(txn: PrTxn) -> bool:
            txn.later(lambda p: p.zrem(self.keys.queued, entry))  # whatever becomes of it
            state = txn.msgs.get(mid)
            if state is None or state.status != "queued" or state.dispatch != dispatch:
                return False
            if txn.meta is None or state.gen != txn.meta.gen:
                return self._drop_stale(txn, mid, state)
            self._rerun(txn, mid, state, now_ms, f"the job of its run {dispatch} was lost")
            return True

        return self._txn(pr, body)

    def signal(self, account: str, at_ms: int | None = None) -> None:
        """A slot on `account` freed (at `at_ms`, Redis ms, read after the release):
        the waker moves that account's line head now. The time is kept, highest wins,
        for a message that was refused before the release but joins the line after
        this wake-up was taken (`park`'s `since_ms`)."""
        with self.redis.pipeline(transaction=True) as pipe:
            if at_ms is not None:
                pipe.zadd(self.keys.freed, {account: at_ms}, gt=True)
            pipe.rpush(self.keys.wake, account)
            pipe.execute()

    def line_head(self, account: str) -> str | None:
        raw = cast(list[bytes], self.redis.zrange(self.keys.line(account), 0, 0))
        return raw[0].decode() if raw else None

    def all_terminal(self, pr: str) -> bool:
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.msgs(pr)))
        return all(m.status in TERMINAL for m in decode_messages(raw).values())

    def read_meta(self, pr: str) -> PrMeta | None:
        return decode_meta(pr, cast(dict[bytes, bytes], self.redis.hgetall(self.keys.meta(pr))))
