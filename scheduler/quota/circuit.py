"""A per-account circuit that stays open until a person closes it.

NEEDS_PERSON answers (a rejected key, an expired plan, a fair-use restriction) cannot
be fixed by waiting, and retrying them burns goodwill: a rejected key retried forever
is how accounts get flagged. So the circuit never closes because time passed or a
probe succeeded; only `close` (a person, through the CLI) or the key's TTL does.
A fair-use restriction (Z.AI 1313) is stored without a TTL: it must never be retried
automatically, not even a week later.

The key shares the limiter's `{account}` hash tag, so an account's state lives in one
Redis Cluster slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import redis as redis_lib

from scheduler.quota.limiter import LIMITER_PREFIX

__all__ = ["DEFAULT_TTL_MS", "NEVER_EXPIRES", "Circuit", "CircuitState"]

# Long enough that nobody misses the alert over a weekend, short enough that a
# forgotten circuit on a since-fixed key does not outlive every memory of it.
DEFAULT_TTL_MS = 7 * 86_400_000
# Codes whose circuit only a person may close, whatever the TTL.
NEVER_EXPIRES = frozenset({"1313"})


@dataclass(frozen=True, slots=True)
class CircuitState:
    """Why an account is out of service; `message` says what a person should do."""

    account: str
    code: str
    message: str
    opened_at_ms: int


class Circuit:
    """Open/closed per account, shared by every worker through Redis."""

    def __init__(
        self,
        redis: redis_lib.Redis,
        *,
        key_prefix: str = LIMITER_PREFIX,
        ttl_ms: int = DEFAULT_TTL_MS,
        never_expires: frozenset[str] = NEVER_EXPIRES,
    ) -> None:
        if ttl_ms <= 0:
            raise ValueError(f"ttl_ms must be positive, got {ttl_ms}")
        self.redis = redis
        self.key_prefix = key_prefix
        self.ttl_ms = ttl_ms
        self.never_expires = never_expires

    def key(self, account: str) -> str:
        return f"{self.key_prefix}:{{{account}}}:circuit"

    def open(self, account: str, code: str, message: str, *, now_ms: int | None = None) -> None:
        """Take the account out of service. Reopening keeps the first opening time
        (the outage started then) and records the latest reason."""
        key = self.key(account)
        opened = now_ms if now_ms is not None else self._redis_now_ms()
        pipe = self.redis.pipeline()
        pipe.hsetnx(key, "opened_at", str(opened))
        pipe.hset(key, mapping={"code": code, "message": message})
        if code in self.never_expires:
            pipe.persist(key)
        elif not self._sticky(account):
            pipe.pexpire(key, self.ttl_ms)
        pipe.execute()

    def close(self, account: str) -> bool:
        """A person fixed the cause. True if the circuit was open."""
        return _int(self.redis.delete(self.key(account))) == 1

    def is_open(self, account: str) -> bool:
        return _int(self.redis.exists(self.key(account))) == 1

    def state(self, account: str) -> CircuitState | None:
        raw = cast(dict[bytes | str, bytes | str], self.redis.hgetall(self.key(account)))
        if not raw:
            return None
        data = {_text(k): _text(v) for k, v in raw.items()}
        return CircuitState(
            account=account,
            code=data.get("code", ""),
            message=data.get("message", ""),
            opened_at_ms=int(data.get("opened_at") or 0),
        )

    def note(self, account: str, event: str) -> int:
        """Count a health event (e.g. Z.AI 1302, too much concurrency) so a person can
        see that a plan's concurrency is set too high; returns the new count."""
        key = f"{self.key_prefix}:{{{account}}}:counters"
        pipe = self.redis.pipeline()
        pipe.hincrby(key, event, 1)
        pipe.pexpire(key, self.ttl_ms)
        count, _ = pipe.execute()
        return int(count)

    def counters(self, account: str) -> dict[str, int]:
        return self._read(f"{self.key_prefix}:{{{account}}}:counters")

    def tally(self, account: str, event: str) -> None:
        """Count what the account's workers saw (limiter decisions, provider answers)
        for /metrics: one pipelined round trip, kept apart from the health events."""
        key = f"{self.key_prefix}:{{{account}}}:tally"
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(key, event, 1)
        pipe.pexpire(key, self.ttl_ms)
        pipe.execute()

    def tallies(self, account: str) -> dict[str, int]:
        return self._read(f"{self.key_prefix}:{{{account}}}:tally")

    def _read(self, key: str) -> dict[str, int]:
        raw = cast(dict[bytes | str, bytes | str], self.redis.hgetall(key))
        return {_text(k): int(v) for k, v in raw.items()}

    def ttl_ms_left(self, account: str) -> int | None:
        """None when closed or when only a person can close it (no TTL)."""
        left = _int(self.redis.pttl(self.key(account)))
        return left if left >= 0 else None

    def _sticky(self, account: str) -> bool:
        """An open circuit without a TTL (a 1313) must not gain one from a later code."""
        return _int(self.redis.pttl(self.key(account))) == -1

    def _redis_now_ms(self) -> int:
        seconds, micros = cast(tuple[int, int], self.redis.time())
        return int(seconds) * 1000 + int(micros) // 1000


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _int(value: Any) -> int:
    """redis-py types sync replies as `Awaitable | Any`; ours are always integers."""
    return int(value)
