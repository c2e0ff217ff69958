"""Finding queued messages whose RQ job is gone, and running them again.

A message at `queued` has exactly one RQ job for its dispatch, created in the same
transaction (see `scheduler.admission`). Redis keeps that promise until it crashes:
with AOF `everysec` the last second of writes can be lost, and what survives may be
a worker's pop of the job (the job then sits in RQ's intermediate list, or ran and
finished) without the claim it made. The message stays `queued`, no job will ever
claim it, and the reaper, which watches claims, never sees it.

Every queued run is listed in `P:queued` (`<member>@<dispatch>`, added with its job,
removed by its claim or by `Admission.redispatch`). The sweep compares that list with
RQ's queue: a run whose job is on the queue is waiting its turn; one whose job is not
was either just popped (its claim follows within milliseconds) or is lost. A run
still unclaimed and off the queue `grace_ms` after it was first seen so is dispatched
again. The grace is one claim period: a worker whose claim was forgotten takes it
back with its next heartbeat (every third of a claim period), before the sweep would
run it twice. A wrong guess costs one idle job, never a second review: see
`Admission.redispatch`.
"""

from __future__ import annotations

import logging
from typing import cast

from scheduler.admission import Admission
from scheduler.state.jobs import job_id_for
from scheduler.state.keys import split_queued

__all__ = ["LostJobSweep"]

log = logging.getLogger(__name__)


class LostJobSweep:
    """Run by the waker every `every_ms`; one pass reads `P:queued` and RQ's queue."""

    def __init__(self, admission: Admission, *, grace_ms: int, every_ms: int = 5_000) -> None:
        self.admission = admission
        self.grace_ms = grace_ms
        self.every_ms = min(every_ms, max(1, grace_ms // 2))
        self.next_ms = 0

    def due(self, now_ms: int) -> bool:
        return now_ms >= self.next_ms

    def sweep(self, now_ms: int) -> int:
        """One pass; returns how many runs it dispatched again."""
        self.next_ms = now_ms + self.every_ms
        adm, keys = self.admission, self.admission.keys
        raw = cast(list[tuple[bytes, float]], adm.redis.zrange(keys.queued, 0, -1, withscores=True))
        if not raw:
            return 0
        on_queue = set(cast(list[bytes], adm.redis.lrange(adm.queue.key, 0, -1)))
        marks: dict[str, float] = {}
        lost: list[tuple[str, int]] = []
        for entry_b, since in raw:
            entry = entry_b.decode()
            member, dispatch = split_queued(entry)
            if job_id_for(keys.prefix, member, dispatch).encode() in on_queue:
                if since:
                    marks[entry] = 0  # it was only on its way back (at the front)
            elif not since:
                marks[entry] = now_ms
            elif now_ms - since >= self.grace_ms:
                lost.append((member, dispatch))
        if marks:  # XX: an entry its claim removed meanwhile stays removed
            adm.redis.zadd(keys.queued, marks, xx=True)
        moved = 0
        for member, dispatch in lost:
            if adm.redispatch(member, dispatch, now_ms):
                log.warning("the job of %s run %d was lost; running it again", member, dispatch)
                moved += 1
        return moved
