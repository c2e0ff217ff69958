"""Each delivery acted on once, without ever losing one to a Redis hiccup.

A delivery id is first *claimed* (`pending`, for a minute), and marked `done` for
`dedupe_ttl_s` only after its enqueue (or cancel) succeeded. If the work fails, the
claim is deleted, so the forge's redelivery is processed rather than answered
"duplicate"; if even the delete fails (Redis went away), the claim lapses within a
minute. A redelivery that arrives while the first copy is still being processed is
told to retry later (409) instead of being acknowledged for work that may yet fail.
"""

from __future__ import annotations

import logging
from typing import Literal, cast

import redis as redis_lib

__all__ = ["CLAIM_TTL_S", "Claim", "Deliveries"]

log = logging.getLogger(__name__)

CLAIM_TTL_S = 60  # far longer than a delivery takes; short enough for a timely redelivery
_PENDING, _DONE = b"pending", b"done"

Claim = Literal["new", "done", "pending"]


class Deliveries:
    """Delivery ids under `<prefix>:webhook:delivery:<forge>:<id>`."""

    def __init__(self, redis: redis_lib.Redis, prefix: str, ttl_s: int) -> None:
        self.redis, self.prefix, self.ttl_s = redis, prefix, ttl_s

    def key(self, forge: str, delivery: str) -> str:
        return f"{self.prefix}:webhook:delivery:{forge}:{delivery}"

    def claim(self, key: str) -> Claim:
        """One round trip: take the id if nobody has, else say how far the other got."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, _PENDING, nx=True, ex=CLAIM_TTL_S)
            pipe.get(key)
            taken, value = cast(list[bytes | bool | None], pipe.execute())
        if taken:
            return "new"
        return "pending" if value == _PENDING else "done"

    def confirm(self, key: str) -> None:
        """The work is queued: remember the id for the redelivery window. If this write
        fails the work still stands; the claim lapses and enqueue_pr drops a repeat."""
        try:
            self.redis.set(key, _DONE, ex=self.ttl_s)
        except redis_lib.RedisError:
            log.warning("could not mark delivery %s done; a redelivery may be re-checked", key)

    def release(self, key: str) -> None:
        """The work failed: forget the claim so a redelivery is processed."""
        try:
            self.redis.delete(key)
        except redis_lib.RedisError:
            log.warning("could not release delivery %s; it lapses in %d s", key, CLAIM_TTL_S)
