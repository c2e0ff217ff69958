"""Where each window's last provider reading came from, and what the key turned out to be.

The limiter adopts the provider's own count (`Limiter.sync`), but a person asking "why
does reviewq think the window is this full?" needs to see the reading: which source
(a response header or a quota endpoint), when, and whether it moved the view. An
answer that carried no reading at all (Synthetic's `/v2/quotas` answers an API key
with `{}` since about 2026-09-14) is recorded as such: "no reading", never "nothing
used". The quota endpoint also tells what a key is (Z.AI: prompt windows for a V2
key, credit windows for a V3 one), which `detection` keeps next to what the config
says, for `inspect`, `/metrics` and the worker log.

The keys share the account's hash tag with the limiter's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, cast

import redis as redis_lib

__all__ = ["Detection", "ProviderReadings", "ReadingsView", "WindowReading"]

_TTL_MS = 8 * 86_400_000  # a week's window and a day: older readings say nothing
_CLAIM = """
-- KEYS[1] the last poll's time; ARGV: now ms, interval ms
local last = tonumber(redis.call('GET', KEYS[1]) or '')
local now, gap = tonumber(ARGV[1]), tonumber(ARGV[2])
if last and now - last < gap and now >= last then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', math.max(1, gap))
return 1
"""


@dataclass(frozen=True, slots=True)
class WindowReading:
    """The last reading applied to one plan window."""

    window: str
    source: str
    at_ms: int
    used_milli: int
    limit_milli: int
    reset_at_ms: int | None
    moved: bool


@dataclass(frozen=True, slots=True)
class Detection:
    """What the quota endpoint says the key is, against what the config names.
    `suggested` is the preset to use when they disagree (None: they agree)."""

    metering: str
    configured: str
    level: str | None
    suggested: str | None
    at_ms: int

    @property
    def mismatch(self) -> bool:
        return self.metering != self.configured


@dataclass(frozen=True, slots=True)
class ReadingsView:
    windows: dict[str, WindowReading] = field(default_factory=dict)
    empty: dict[str, int] = field(default_factory=dict)  # source -> last empty answer
    detection: Detection | None = None


class ProviderReadings:
    """One account's reading log in Redis (see module doc)."""

    def __init__(self, redis: redis_lib.Redis, account: str, *, key_prefix: str) -> None:
        self.redis, self.account = redis, account
        base = f"{key_prefix}:{{{account}}}"
        self.key, self.poll_key = f"{base}:readings", f"{base}:poll"
        self._claim = redis.register_script(_CLAIM)

    def note(self, readings: list[WindowReading], empty_sources: list[str], now_ms: int) -> None:
        """Record applied readings and answers that carried none, in one round trip."""
        mapping: dict[str, str] = {}
        for r in readings:
            mapping[f"w:{r.window}"] = json.dumps(
                [r.source, r.at_ms, r.used_milli, r.limit_milli, r.reset_at_ms, r.moved]
            )
        for source in empty_sources:
            mapping[f"empty:{source}"] = str(now_ms)
        if not mapping:
            return
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self.key, mapping=mapping)
            pipe.pexpire(self.key, _TTL_MS)
            pipe.execute()

    def note_detection(self, detection: Detection) -> None:
        data = [
            detection.metering,
            detection.configured,
            detection.level,
            detection.suggested,
            detection.at_ms,
        ]
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self.key, "detected", json.dumps(data))
            pipe.pexpire(self.key, _TTL_MS)
            pipe.execute()

    def claim_poll(self, now_ms: int, interval_ms: int) -> bool:
        """Whether this worker polls now: one poll per account per interval, however
        many workers are busy (they share the interval through this key). `now_ms` is
        the limiter's clock, so the interval is kept on the clock polls are due by."""
        return bool(self._claim(keys=[self.poll_key], args=[now_ms, interval_ms]))

    def read(self) -> ReadingsView:
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.key))
        windows: dict[str, WindowReading] = {}
        empty: dict[str, int] = {}
        detection = None
        for key_b, value_b in raw.items():
            key, value = key_b.decode(), value_b.decode()
            if key.startswith("w:"):
                windows[key[2:]] = _window(key[2:], json.loads(value))
            elif key.startswith("empty:"):
                empty[key[6:]] = int(value)
            elif key == "detected":
                detection = Detection(*json.loads(value))
        return ReadingsView(windows, empty, detection)


def _window(name: str, data: list[Any]) -> WindowReading:
    source, at, used, limit, reset, moved = data
    return WindowReading(name, source, int(at), int(used), int(limit), reset, bool(moved))
