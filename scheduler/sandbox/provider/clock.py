"""Simulated time, and how a simulated instant maps back onto the wall clock.

The simulator runs a 5-hour window in seconds by scaling time: `sim = (monotonic - t0)
* time_scale + skipped`, in simulated seconds since the server started. The simulated
*calendar* (for peak hours) is `wall_start + sim`.

Reset times the simulator writes into responses (Z.AI's "will reset at", Synthetic's
`nextTickAt`, OpenAI's durations) are **real wall-clock times at which the simulated
window frees**: `wall = wall_start + (sim - skipped) / time_scale`. A client that parses
them with the ordinary parsers and waits until then therefore behaves exactly as it
would against the real provider, only faster. `advance()` jumps the simulated clock
forward (a test or `simulate` skipping idle hours); instants already handed out then
lie later than needed, which errs on the side a client can live with.

Formatting rounds *up* (to the second for Z.AI, to the millisecond elsewhere) so that
a client which waits until the printed instant never arrives early.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable

__all__ = ["BEIJING", "SimClock", "epoch_ms", "go_duration", "iso_utc", "zai_wall_time"]

BEIJING = dt.timezone(dt.timedelta(hours=8), "UTC+8")


class SimClock:
    """Scaled monotonic time; never goes backwards, so window logs stay sorted."""

    def __init__(
        self,
        time_scale: float,
        *,
        wall_start: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not time_scale > 0 or not math.isfinite(time_scale):
            raise ValueError(f"time_scale must be a positive number, got {time_scale!r}")
        self.time_scale = time_scale
        self._monotonic = monotonic
        self._t0 = monotonic()
        self.wall_start = time.time() if wall_start is None else wall_start
        self.skipped = 0.0
        # The calendar (peak hours) reads `calendar_start + sim - calendar_at` (epoch s);
        # by default it starts at the wall clock when the server starts.
        self.calendar_start, self.calendar_at = self.wall_start, 0.0

    def now(self) -> float:
        """Simulated seconds since the server started."""
        return (self._monotonic() - self._t0) * self.time_scale + self.skipped

    def advance(self, seconds: float) -> None:
        """Jump forward without waiting: time only moves on, or window logs would lie."""
        if not seconds >= 0 or not math.isfinite(seconds):
            raise ValueError(f"can only advance by a non-negative number, got {seconds!r}")
        self.skipped += seconds

    def wall_at(self, sim: float) -> float:
        """Epoch seconds at which the simulated clock will read `sim` (if not advanced)."""
        return self.wall_start + (sim - self.skipped) / self.time_scale

    def real_seconds(self, sim_seconds: float) -> float:
        """How long a simulated span lasts in real time."""
        return sim_seconds / self.time_scale

    def calendar(self, sim: float) -> dt.datetime:
        """The simulated date and time, for rules that depend on the hour of day."""
        return dt.datetime.fromtimestamp(self.calendar_start + sim - self.calendar_at, dt.UTC)

    def set_calendar(self, start: float, at_sim: float) -> None:
        """From simulated instant `at_sim` on, the calendar reads `start` (epoch s) and
        runs with simulated time: a scenario's `start_at`."""
        self.calendar_start, self.calendar_at = start, at_sim


def epoch_ms(wall: float) -> int:
    """Epoch milliseconds, rounded up."""
    return math.ceil(wall * 1000)


def iso_utc(wall: float) -> str:
    """ISO-8601 with an offset and milliseconds, as Synthetic sends, rounded up."""
    when = dt.datetime.fromtimestamp(epoch_ms(wall) / 1000, dt.UTC)
    return when.isoformat(timespec="milliseconds")


def zai_wall_time(wall: float) -> str:
    """Z.AI's `YYYY-MM-DD HH:MM:SS`: Beijing time, no offset, rounded up to the second."""
    when = dt.datetime.fromtimestamp(math.ceil(wall), BEIJING)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def go_duration(seconds: float) -> str:
    """OpenAI's reset durations (`6m0s`, `1.5s`, `20ms`), rounded up to the millisecond."""
    ms = max(0, math.ceil(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    text = f"{secs}s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return text
