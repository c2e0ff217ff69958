"""Each delivery acted on once, without ever losing one to a Redis hiccup.

A delivery id is first *claimed* (`pending`, for a minute), and marked `done` for
`dedupe_ttl_s` only after its enqueue (or cancel) succeeded: for an enqueue, in the
very MULTI/EXEC that queues the plan (`done_in`), so the mark and the job commit
together and cost no round trip of their own. If the work fails, the
claim is deleted, so the forge's redelivery is processed rather than answered
"duplicate"; if even the delete fails (Redis went away), the claim lapses within a
minute. A redelivery that arrives while the first copy is still being processed is
told to retry later (409) instead of being acknowledged for work that may yet fail.

A delivery is known by two keys: its id (`X-GitHub-Delivery`, which the forge keeps
across a redelivery) and the SHA-256 of its body. The id header is not signed, so a
captured delivery sent again under a new id is still the same signed body, and is
answered `duplicate` for as long as ids are remembered. Both keys are claimed, marked
and released together.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Literal, cast

import redis as redis_lib
from redis.client import Pipeline

__all__ = ["CLAIM_TTL_S", "Claim", "Deliveries"]

log = logging.getLogger(__name__)

CLAIM_TTL_S = 60  # far longer than a delivery takes; short enough for a timely redelivery
_PENDING, _DONE = b"pending", b"done"

Claim = Literal["new", "done", "pending"]

# `claim` of every key of a delivery and Redis's clock, in one round trip (`claim_at`).
# TIME comes after the writes, which every Redis version allows in a script.
#
# KEYS[1..n] = the delivery's keys (its id, its body's digest)
# ARGV[1] = the pending mark
# ARGV[2] = how long a claim holds, in seconds
# Returns {mark seen (done before pending; nil if none), TIME seconds, TIME microseconds}.
_CLAIM_AT = """
local seen = false
for _, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  if value and (not seen or seen == ARGV[1]) then
    seen = value
  end
end
if not seen then
  for _, key in ipairs(KEYS) do
    redis.call('SET', key, ARGV[1], 'EX', ARGV[2])
  end
end
local now = redis.call('TIME')
return {seen, now[1], now[2]}
"""


class Deliveries:
    """Delivery ids under `<prefix>:webhook:delivery:<forge>:<id>`, body digests under
    `<prefix>:webhook:body:<forge>:<sha256>`."""

    def __init__(self, redis: redis_lib.Redis, prefix: str, ttl_s: int) -> None:
        self.redis, self.prefix, self.ttl_s = redis, prefix, ttl_s
        self._set_nx_get = True  # until the server says it predates Redis 7.0
        self._claim_at = redis.register_script(_CLAIM_AT)

    def key(self, forge: str, delivery: str) -> str:
        return f"{self.prefix}:webhook:delivery:{forge}:{delivery}"

    def body_key(self, forge: str, body: bytes) -> str:
        return f"{self.prefix}:webhook:body:{forge}:{hashlib.sha256(body).hexdigest()}"

    def keys(self, forge: str, delivery: str, body: bytes) -> tuple[str, str]:
        """Both keys a delivery is known by."""
        return self.key(forge, delivery), self.body_key(forge, body)

    def claim(self, key: str) -> Claim:
        """Take the id if nobody has, else say how far the other copy got: one command
        (`SET NX GET`, Redis >= 7.0), or one MULTI round trip on older servers."""
        if self._set_nx_get:
            try:
                value = self.redis.set(key, _PENDING, nx=True, ex=CLAIM_TTL_S, get=True)
            except redis_lib.ResponseError:  # "syntax error" before 7.0: NX and GET clash
                self._set_nx_get = False
            else:
                return "new" if value is None else _seen(cast(bytes, value))
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, _PENDING, nx=True, ex=CLAIM_TTL_S)
            pipe.get(key)
            taken, value = pipe.execute()
        return "new" if taken else _seen(value)

    def done_in(self, pipe: Pipeline, keys: Sequence[str]) -> None:
        """`confirm`, as more writes in the caller's transaction."""
        for key in keys:
            pipe.set(key, _DONE, ex=self.ttl_s)

    def claim_at(self, *keys: str) -> tuple[Claim, int]:
        """`claim` of every key at once (a mark on any of them counts, `done` before
        `pending`), plus Redis's clock in ms, read in the same round trip: the PR's
        arrival time, which `enqueue_pr` would otherwise ask Redis for separately."""
        seen, sec, usec = cast(
            list[bytes | int | None],
            self._claim_at(keys=list(keys), args=[_PENDING, CLAIM_TTL_S]),
        )
        claim: Claim = "new" if seen is None else _seen(cast(bytes, seen))
        return claim, int(cast(bytes, sec)) * 1000 + int(cast(bytes, usec)) // 1000

    def confirm(self, *keys: str) -> None:
        """The work is queued: remember the keys for the redelivery window. If this
        write fails the work still stands; the claim lapses and enqueue_pr drops a
        repeat."""
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                self.done_in(pipe, keys)
                pipe.execute()
        except redis_lib.RedisError:
            log.warning("could not mark delivery %s done; a redelivery may be re-checked", keys[0])

    def release(self, *keys: str) -> None:
        """The work failed: forget the claim so a redelivery is processed."""
        try:
            self.redis.delete(*keys)
        except redis_lib.RedisError:
            log.warning("could not release delivery %s; it lapses in %d s", keys[0], CLAIM_TTL_S)


def _seen(value: bytes | None) -> Claim:
    """The claim someone else holds; an id that expired in between counts as done
    rather than risk a second enqueue (enqueue_pr would drop a repeat anyway)."""
    return "pending" if value == _PENDING else "done"
