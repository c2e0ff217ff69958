"""What every part of admission shares: the PR transaction, Redis's clock, the reads,
and the two moves that put RQ jobs on the queue (a message's run, a PR's finalize).

A move that dispatches creates its job inside the caller's transaction (`PrTxn.later`),
so a message is never marked queued without its job, nor a job left without it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar, cast

import redis as redis_lib
from rq import Queue

from scheduler.config.review import Fairness
from scheduler.state.jobs import JobQueue
from scheduler.state.keys import Keys, queued_entry
from scheduler.state.records import (
    TERMINAL,
    MessageState,
    PrMeta,
    Retention,
    decode_messages,
    decode_meta,
)
from scheduler.state.txn import PrTxn, run_txn

__all__ = ["AdmissionCore"]

T = TypeVar("T")


class AdmissionCore:
    """The state and helpers the lifecycle, run and line moves all build on."""

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

    @property
    def jobs(self) -> JobQueue:
        """Made from the attributes on each use, so it never disagrees with them."""
        return JobQueue(self.queue, self.keys.prefix, self.job_timeout_s, self.retention)

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
        dispatch, jobs = state.dispatch, self.jobs
        txn.later(lambda p: p.zrem(self.keys.timed, member))
        entry = queued_entry(member, dispatch)
        txn.later(lambda p: p.zadd(self.keys.queued, {entry: 0}))
        txn.later(lambda p: jobs.enqueue_review(member, dispatch, at_front=at_front, pipeline=p))

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

    def _finalize(self, txn: PrTxn) -> None:
        """Every message of the current generation ended: queue the job that sends
        the review."""
        meta = txn.meta
        assert meta is not None
        meta.status = "finishing"
        txn.meta_dirty.add("status")
        pr, gen, jobs = txn.pr, meta.gen, self.jobs
        txn.later(lambda p: jobs.enqueue_finalize(pr, gen, pipeline=p))

    def all_terminal(self, pr: str) -> bool:
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.keys.msgs(pr)))
        return all(m.status in TERMINAL for m in decode_messages(raw).values())

    def read_meta(self, pr: str) -> PrMeta | None:
        return decode_meta(pr, cast(dict[bytes, bytes], self.redis.hgetall(self.keys.meta(pr))))
