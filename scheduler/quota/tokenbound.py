"""A learned upper bound on a prompt's input tokens, per account and model.

A credit plan charges each call by its tokens, but GLM's tokenizer cannot be run here,
so a prompt's input tokens are known only once its answer reports `usage`. reviewq
estimates them as characters / 4 and reserves `estimate x factor` at grant. The factor
is learned from settled calls: the largest ratio actual / estimated seen so far, times
a margin, kept in Redis so every worker uses (and teaches) the same bound. Until
`warmup` calls have settled it is at least `start`, a safe value for code.

For exchangeable calls the chance that the next ratio exceeds the largest of n seen is
1 / (n + 1); the margin makes it smaller still. Every call that does exceed its bound
is counted (`exceeded`), shown by `inspect` and `/metrics`, and settles its true cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import redis as redis_lib
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BoundStats", "InputBound", "InputBoundPolicy"]

_PPM = 1_000_000
_TTL_MS = 30 * 86_400_000  # a model unused for a month starts learning afresh
_RECORD = """
-- KEYS[1] the bound hash; ARGV: model, ratio ppm, exceeded (0/1), ttl ms
local n = redis.call('HINCRBY', KEYS[1], ARGV[1] .. '|n', 1)
if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[1], ARGV[1] .. '|over', 1) end
local cur = tonumber(redis.call('HGET', KEYS[1], ARGV[1] .. '|max') or '0')
if tonumber(ARGV[2]) > cur then redis.call('HSET', KEYS[1], ARGV[1] .. '|max', ARGV[2]) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return n
"""


class InputBoundPolicy(BaseModel):
    """`start`: the least factor until `warmup` calls have settled. 4.0 allows one
    token per character, as CJK text and minified code can cost; dense code runs 2.5
    to 3.5 characters a token (reviewq's choice, 2026-12: a high start only holds
    reserved credits a little longer, since each settle returns the rest at once).
    `margin`: added on top of the largest ratio seen."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: float = Field(default=4.0, ge=1, le=10)
    margin: float = Field(default=0.05, ge=0, le=1)
    warmup: int = Field(default=50, ge=0, le=100_000)


@dataclass(frozen=True, slots=True)
class BoundStats:
    """One model's learning: calls settled, calls whose input passed their bound, the
    largest ratio actual / estimated, and the factor now in force."""

    model: str
    calls: int
    exceeded: int
    max_ratio: float
    factor: float


class InputBound:
    """The bound for one account's calls (see module doc)."""

    def __init__(
        self,
        redis: redis_lib.Redis,
        account: str,
        *,
        key_prefix: str,
        policy: InputBoundPolicy | None = None,
    ) -> None:
        self.redis, self.account = redis, account
        self.policy = policy or InputBoundPolicy()
        self.key = f"{key_prefix}:{{{account}}}:input-bound"
        self._record = redis.register_script(_RECORD)

    def _factor(self, calls: int, max_ppm: int) -> float:
        learned = max_ppm / _PPM * (1 + self.policy.margin)
        return learned if calls >= self.policy.warmup else max(self.policy.start, learned)

    def factor(self, model: str) -> float:
        raw = cast(list[bytes | None], self.redis.hmget(self.key, [f"{model}|n", f"{model}|max"]))
        return self._factor(int(raw[0] or 0), int(raw[1] or 0))

    def bound(self, model: str, estimated: int) -> int:
        """Input tokens to reserve for a prompt estimated at `estimated` tokens."""
        return math.ceil(estimated * self.factor(model) - 1e-9)  # 1.3 x 1.05 is 1.365...02

    def record(self, model: str, estimated: int, actual: int, bound: int) -> bool:
        """Learn from one settled call; True if its input passed the bound it had."""
        exceeded = actual > bound
        ratio = math.ceil(actual * _PPM / max(1, estimated))
        args: list[str | int] = [model, ratio, "1" if exceeded else "0", _TTL_MS]
        self._record(keys=[self.key], args=args)
        return exceeded

    def stats(self) -> list[BoundStats]:
        raw = cast(dict[bytes, bytes], self.redis.hgetall(self.key))
        fields = {k.decode(): int(v) for k, v in raw.items()}
        models = sorted({f.rpartition("|")[0] for f in fields})
        out = []
        for model in models:
            calls, top = fields.get(f"{model}|n", 0), fields.get(f"{model}|max", 0)
            over = fields.get(f"{model}|over", 0)
            out.append(BoundStats(model, calls, over, top / _PPM, self._factor(calls, top)))
        return out
