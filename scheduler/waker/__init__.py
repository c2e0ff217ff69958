"""The waker room: what moves parked work back onto the queue.

- `waker`: the loop one worker process runs as leader (`Waker`);
- `reruns`: plan and finalize jobs that asked to run again later (`schedule_plan`,
  `schedule_finalize`);
- `lostjobs`: queued messages whose RQ job a Redis crash lost (`LostJobSweep`).
"""

from __future__ import annotations

from scheduler.waker.lostjobs import LostJobSweep
from scheduler.waker.reruns import schedule_finalize, schedule_plan
from scheduler.waker.waker import Waker

__all__ = ["LostJobSweep", "Waker", "schedule_finalize", "schedule_plan"]
