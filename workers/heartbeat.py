"""Keep something alive in Redis while a slow call runs, without holding up the call.

A worker keeps two things alive this way: the concurrency lease of a provider call
(`workers.providers.attempt.LeaseHeartbeat`) and the claim of the message it is
running (`workers.jobs.review_message`). Both expire on their own when the worker
dies, which is the point: only a live worker renews them. A beat that fails (a Redis
hiccup) is logged and the next beat tries again, since the call it keeps alive is
worth more than one missed renewal.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

__all__ = ["Heartbeat"]

log = logging.getLogger(__name__)


class Heartbeat:
    """Calls `beat` every `interval_s` on a daemon thread while the `with` block runs.

    `name` names the thread, `subject` what is kept alive (for the logs). `beat`
    returns False when what it keeps alive is gone for good (renewing it again
    cannot help): the heartbeat then stops. `beats` counts the beats that returned
    True. Leaving the block stops the thread and waits for a beat in progress.
    """

    def __init__(
        self, beat: Callable[[], bool], interval_s: float, *, name: str, subject: str
    ) -> None:
        self.beat, self.interval_s = beat, interval_s
        self.name, self.subject = name, subject
        self.beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                alive = self.beat()
            except Exception:  # a Redis hiccup must not kill the call; try again next beat
                log.warning("%s failed for %s", self.name, self.subject, exc_info=True)
                continue
            if not alive:
                return
            self.beats += 1
