"""Waiting for budget: the lines messages stand in per account, and the wake-ups
that move a line's head back onto the queue.

Under `fair` a line is in start-time fair order: each PR's next message is placed one
step after its previous one, a newcomer half a step ahead of the message served last
(whose tag is the line's virtual time, `P:vtime`); under `fifo` it is in ticket order.
When a slot of an account frees, `signal` asks the waker to `wake` that line's head.
"""

from __future__ import annotations

from typing import cast

from scheduler.admission.core import AdmissionCore
from scheduler.state.keys import split_member
from scheduler.state.records import MessageState
from scheduler.state.txn import PrTxn

__all__ = ["Lines"]


class Lines(AdmissionCore):
    """Joining a line, waking its head, and the signal that a slot freed."""

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
                    self._serve_tag(txn, state.tag)
            self._enqueue(txn, mid, state, at_front=True)
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

    def _join_line(self, txn: PrTxn, member: str, state: MessageState, line: str, due: int) -> None:
        """`member` stands in `line` at its place in the line's order, and the line is
        tried again by `due` at the latest, should the wake-up of a freed slot be lost."""
        meta = txn.meta
        assert meta is not None
        if self.fairness.mode == "fair" and state.tag is None:
            # Start-time fair queueing: one step after this PR's previous message, but
            # not before the message served last, except that a newcomer goes half a
            # step ahead of it: that message may have been woken and refused, and is
            # back at the head of the line with the same tag.
            meta.tag = max(self._virtual_time(txn) - 0.5, meta.tag + 1)
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

    def _virtual_time(self, txn: PrTxn) -> float:
        """The start tag of the message served last: where the `fair` lines stand.
        Read in the caller's transaction, so it agrees with the tags decided there."""
        return float(cast(bytes | None, txn.pipe.get(self.keys.vtime)) or 0)

    def _serve_tag(self, txn: PrTxn, tag: float) -> None:
        """A message with start tag `tag` leaves its line for the queue: the virtual
        time moves on to it, never back (a refused message rejoins with its old tag)."""
        new_vt = repr(max(self._virtual_time(txn), tag))
        txn.later(lambda p: p.set(self.keys.vtime, new_vt))
