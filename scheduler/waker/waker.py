"""The waker: puts waiting messages back on the queue the moment budget frees.

Why not RQ's own scheduler (`enqueue_at`, or a job returning `rq.Retry`)? Its
registry scores are whole seconds, rounded down, and it polls once a second: a
message could start up to a second early (and be refused again) or two seconds late,
and a freed concurrency slot would sit idle until the next poll. Here a freed slot is
a push onto `P:wake` that the waker's BLPOP returns at once, and a due time is slept
to with millisecond precision. A message that parks pushes an empty wake-up, so a due
time earlier than the one the waker is asleep until is not missed.

The waker also queues the plan and finalize jobs that asked to run again later
(`reruns`), runs `LostJobSweep`: queued messages whose RQ job a Redis crash lost, and
sizes the adaptive reserve of accounts that have one (`reserve`, docs/reserve.md).

One waker acts at a time (a lock with a TTL); every `reviewq worker` runs one, so
another takes over within `lock_ms` when the active one dies. Two acting at once would
still be safe, as every move is a transaction that checks the message's state.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from typing import cast

import redis as redis_lib

from scheduler.admission import Admission
from scheduler.waker.lostjobs import LostJobSweep
from scheduler.waker.reruns import queue_due_reruns
from scheduler.waker.reserve import ReserveController

__all__ = ["Waker"]

log = logging.getLogger(__name__)

_RENEW = """
-- KEYS[1] = the lock; ARGV[1] = our token; ARGV[2] = lock ms
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


class Waker:
    """Moves due and slot-freed messages back onto the queue (see module doc)."""

    def __init__(
        self,
        admission: Admission,
        *,
        lock_ms: int = 5_000,
        max_block_ms: int = 1_000,
        batch: int = 200,
        claim_ms: int = 60_000,
        reserve: ReserveController | None = None,
    ) -> None:
        """`claim_ms`: the workers' claim period (`WorkerSpec.claim_ms`), the time a
        worker whose claim Redis forgot has to take it back (see `LostJobSweep`).
        `reserve`: sizes the adaptive reserves, when any account has one."""
        self.reserve = reserve
        self.admission = admission
        self.redis = admission.redis
        self.keys = admission.keys
        self.lock_ms, self.max_block_ms, self.batch = lock_ms, max_block_ms, batch
        self.token = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._renew = self.redis.register_script(_RENEW)
        self.lost_jobs = LostJobSweep(admission, grace_ms=claim_ms)
        self.moved = 0

    def leader(self) -> bool:
        return bool(self._renew(keys=[self.keys.waker_lock], args=[self.token, self.lock_ms]))

    def run(self, stop: threading.Event) -> None:
        """Until `stop` is set; a Redis outage is logged and retried, never fatal."""
        while not stop.is_set():
            try:
                if not self.leader():
                    stop.wait(min(1.0, self.lock_ms / 3000))
                    continue
                self.step()
            except Exception:
                log.warning("waker step failed; retrying in a second", exc_info=True)
                stop.wait(1.0)

    def step(self, block: bool = True) -> int:
        """One round: wait for the soonest due time or a wake-up, then move what is
        due (timers, lines, lapsed claims) and the heads of lines whose slot freed."""
        signals: list[bytes] = []
        if block:
            wait_ms = self._next_due_in(self.admission.now_ms())
            if wait_ms > 0:
                popped = cast(
                    tuple[bytes, bytes] | None,
                    self.redis.blpop([self.keys.wake], timeout=wait_ms / 1000),
                )
                signals = [popped[1]] if popped else []
        more = cast(list[bytes] | None, self.redis.lpop(self.keys.wake, self.batch))
        now = self.admission.now_ms()
        moved = self._due_timed(now) + self._due_lines(now) + self._lapsed(now)
        moved += queue_due_reruns(self.admission, now, self.batch)
        if self.lost_jobs.due(now):
            moved += self.lost_jobs.sweep(now)
        for account in [*signals, *(more or [])]:
            if account:  # an empty one only asks to read the due times again
                moved += self._wake_line(account.decode())
        self.moved += moved
        self._size_reserve(now)
        return moved

    def _size_reserve(self, now: int) -> None:
        """After the moves, so a slow or failing round never delays a wake-up; a
        failure keeps the reserve in force and is retried at the next step."""
        if self.reserve is None or self.reserve.next_due() > now:
            return
        try:
            self.reserve.step(now)
        except redis_lib.RedisError:
            log.warning("adaptive reserve not sized; the last one stays", exc_info=True)

    def _due_timed(self, now: int) -> int:
        members = cast(
            list[bytes],
            self.redis.zrangebyscore(self.keys.timed, "-inf", now, start=0, num=self.batch),
        )
        return sum(self.admission.wake(m.decode()) for m in members)

    def _due_lines(self, now: int) -> int:
        due = cast(list[bytes], self.redis.zrangebyscore(self.keys.line_due, "-inf", now))
        moved = 0
        for raw in due:
            account = raw.decode()
            self.redis.zrem(self.keys.line_due, account)
            moved += self._wake_line(account)
        return moved

    def _wake_line(self, account: str) -> int:
        """Move the head of `account`'s line. If the head then finds budget it runs;
        if not it rejoins the line (same place) with a new due time. Either way the
        line keeps a due time, so a lost wake-up costs at most `fallback_ms`."""
        moved = 0
        for _ in range(10):
            head = self.admission.line_head(account)
            if head is None:
                return 0
            if self.admission.wake(head, account):  # else it left the line: try the next
                moved = 1
                break
        if self.redis.zcard(self.keys.line(account)):
            due = self.admission.now_ms() + self.admission.fallback_ms
            self.redis.zadd(self.keys.line_due, {account: due}, lt=True)
        return moved

    def _lapsed(self, now: int) -> int:
        members = cast(
            list[bytes],
            self.redis.zrangebyscore(self.keys.running, "-inf", now, start=0, num=self.batch),
        )
        moved = 0
        for member in members:
            if self.admission.reap(member.decode(), now):
                log.warning("claim lapsed; running %s again", member.decode())
                moved += 1
        return moved

    def _next_due_in(self, now: int) -> int:
        """Milliseconds until the soonest timer, line, claim deadline or job rerun
        (capped)."""
        soonest = now + self.max_block_ms
        if self.reserve is not None:
            soonest = min(soonest, self.reserve.next_due())
        keys = self.keys
        for key in (keys.timed, keys.line_due, keys.running, keys.finalize_due, keys.plan_due):
            first = cast(list[tuple[bytes, float]], self.redis.zrange(key, 0, 0, withscores=True))
            if first:
                soonest = min(soonest, int(first[0][1]))
        return max(0, soonest - now)
