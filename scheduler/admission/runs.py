"""A run of a message: a worker claims it, keeps its claim alive, and parks or finishes
it; a run whose worker died (its claim lapsed) or whose job a Redis crash lost runs
again, up to `MAX_RUNS` times.

Every run has a dispatch number, carried by its RQ job: a job whose dispatch no
longer matches its message is stale and changes nothing (`_owned`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeGuard, cast

from scheduler.admission.lines import Lines
from scheduler.state.keys import queued_entry, split_member
from scheduler.state.records import MessageState, PrMeta
from scheduler.state.txn import PrTxn

__all__ = ["MAX_RUNS", "Claimed", "Runs"]

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


class Runs(Lines):
    """A worker's moves on the message it runs, and the waker's on runs that were lost.
    A `Lines` because a run that must wait for an account joins that account's line."""

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
            self._close_current(txn, mid, state)
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
        state.lost += 1
        if state.lost < MAX_RUNS:
            state.reason = f"{why}; running it again"
            self._enqueue(txn, mid, state, at_front=True)
            return
        state.status, state.reason = "failed", f"{why}: run lost {state.lost} times"
        state.finished_ms = now_ms
        self._close_current(txn, mid, state)

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

    def _close_current(self, txn: PrTxn, mid: str, state: MessageState) -> None:
        """A message of the current generation ended (done or failed): its place in
        the PR's in-flight cap goes to the next pending message, and the last one to
        end queues the PR's finalize job."""
        meta = txn.meta
        assert meta is not None
        txn.put(mid, state)
        meta.inflight = max(0, meta.inflight - 1)
        txn.meta_dirty.add("inflight")
        self._fill(txn, self._backlog(txn))
        if all(m.terminal for m in txn.msgs.values() if m.gen == meta.gen):
            self._finalize(txn)
