"""What each account was charged in all, per window, as the workers saw it.

The limiter's charge records live only as long as the plan's longest window, so they
cannot say what an account has spent over a day or a run. The workers keep a running
total instead: a grant adds its charge, a settle the difference to the real cost, a
refund takes the charge back. It feeds `/metrics` (`reviewq_account_charged_total`)
and `simulate`'s comparison with the provider's own total. A worker killed between
its grant and the ledger's update leaves that one charge out: a counter for people,
not the budget itself (that is the limiter's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import redis as redis_lib

__all__ = ["ChargeLedger"]

_TTL_S = 35 * 86_400  # a month of figures, and a few days' grace


class ChargeLedger:
    def __init__(self, redis: redis_lib.Redis, account: str, *, key_prefix: str) -> None:
        self.redis, self.account = redis, account
        self.key = f"{key_prefix}:{{{account}}}:charged"

    def add(self, cost: Mapping[str, int], sign: int = 1) -> None:
        """Add `cost` (milli-units per window) times `sign` (1, or -1 to take it back)."""
        moves = {w: sign * c for w, c in cost.items() if c}
        if not moves:
            return
        with self.redis.pipeline(transaction=False) as pipe:
            for window, milli in moves.items():
                pipe.hincrby(self.key, window, milli)
            pipe.expire(self.key, _TTL_S)
            pipe.execute()

    def totals(self) -> dict[str, int]:
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.key))
        return {k.decode(): int(v) for k, v in raw.items()}
