"""The simulator's own credit metering, for Z.AI's V3 (credit) plans.

A referee must not share the scheduler's arithmetic, so everything here is written
again from the plan's numbers alone: its price table and time factors. It also plays
the parts reviewq cannot see into: a tokenizer of its own (not characters / 4, so the
scheduler's input bound has something to learn), a prompt cache (a system prompt seen
within `CACHE_TTL_S` is served as cached input), and output drawn from a seeded
generator per request, so the same request always bills the same.

A call is charged at its arrival, on the simulator's calendar, and the provider only
asks whether any credit is left when it admits one: a client that admits more than its
window holds therefore shows as `max_used_in_any_window` over the limit.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from scheduler.quota.plans import Plan

__all__ = ["CACHE_TTL_S", "CallTokens", "CreditMeter", "sim_tokens"]

CACHE_TTL_S = 300.0  # simulated seconds a prompt prefix stays cached
_PIECES = re.compile(
    r"[A-Za-z]+|\d+|\n|[ \t]+|!=|==|<=|>=|&&|\|\||\+\+|--|\+=|-=|->|=>|::|//|\*\*|[^\sA-Za-z\d]"
)
# Output drawn per call: a lognormal with this median and 95th percentile (tokens).
_OUTPUT_MEDIAN, _OUTPUT_P95 = 700.0, 1800.0
# Reasoning drawn when a request sets no `thinking`: the model's own default.
_DEFAULT_REASONING = 4096


def sim_tokens(text: str) -> int:
    """A tokenizer of its own: a letter run costs one token per 6 letters (at least
    one), a digit run one per 3 digits, a newline one, a lone blank nothing (it joins
    the next word), indentation one per 8 blanks, a two-character operator or any other
    character one. Code dense with symbols costs up to twice characters / 4; prose and
    long identifiers about as much or less."""
    total = 0
    for piece in _PIECES.findall(text):
        first = piece[0]
        if first.isalpha():
            total += math.ceil(len(piece) / 6)
        elif first.isdigit():
            total += math.ceil(len(piece) / 3)
        elif first in " \t":
            total += 0 if len(piece) == 1 else math.ceil(len(piece) / 8)
        else:
            total += 1
    return total


@dataclass(frozen=True, slots=True)
class CallTokens:
    """What one call bills: prompt tokens (`cached` of them from the cache), and
    completion tokens, `reasoning` of them thinking."""

    prompt: int
    cached: int
    completion: int
    reasoning: int

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
            "prompt_tokens_details": {"cached_tokens": self.cached},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning},
        }


def _texts(messages: Sequence[Any]) -> list[str]:
    out = []
    for m in messages:
        content = m.get("content") if isinstance(m, Mapping) else None
        if isinstance(content, list):
            content = "".join(
                p.get("text", "") for p in content if isinstance(p, Mapping) and "text" in p
            )
        out.append(content if isinstance(content, str) else "")
    return out


class CreditMeter:
    """One key's metering: tokens of each request, and credits at the time factor."""

    def __init__(self, plan: Plan, seed: int | None) -> None:
        self.plan, self.seed = plan, seed
        self._cache: dict[str, float] = {}
        mu = math.log(_OUTPUT_MEDIAN)
        self._sigma = (math.log(_OUTPUT_P95) - mu) / 1.645
        self._mu = mu

    def tokens(self, body: Mapping[str, Any], now: float) -> CallTokens:
        """Prompt tokens from the prompt itself; output drawn from the request's hash."""
        messages = body.get("messages") or []
        texts = _texts(messages if isinstance(messages, list) else [])
        prompt = sum(sim_tokens(t) for t in texts)
        cached = self._cached(texts[0], now) if texts else 0
        rng = random.Random(self._digest(body))
        limit = body.get("max_tokens")
        content = round(rng.lognormvariate(self._mu, self._sigma))
        if isinstance(limit, int) and limit > 0:
            content = min(content, limit)
        reasoning = self._reasoning(body.get("thinking"), rng)
        return CallTokens(prompt, cached, max(1, content) + reasoning, reasoning)

    def _cached(self, prefix: str, now: float) -> int:
        key = hashlib.sha256(prefix.encode()).hexdigest()
        seen = self._cache.get(key)
        self._cache[key] = now
        return sim_tokens(prefix) if seen is not None and now - seen < CACHE_TTL_S else 0

    def _reasoning(self, thinking: object, rng: random.Random) -> int:
        kind = thinking.get("type") if isinstance(thinking, Mapping) else None
        if kind == "disabled":
            return 0
        budget = thinking.get("budget_tokens") if isinstance(thinking, Mapping) else None
        top = budget if isinstance(budget, int) and budget > 0 else _DEFAULT_REASONING
        return rng.randint(top // 4, top)

    def _digest(self, body: Mapping[str, Any]) -> int:
        raw = repr((self.seed, body.get("model"), body.get("messages"))).encode()
        return int.from_bytes(hashlib.sha256(raw).digest()[:8], "big")

    def factor(self, when: dt.datetime) -> Decimal:
        """The plan's time factor at `when`, read from its numbers here."""
        tf = self.plan.time_factors
        if tf is None:
            return Decimal(1)
        local = when.astimezone(dt.timezone(dt.timedelta(hours=tf.utc_offset_hours)))
        hhmm = f"{local.hour:02d}:{local.minute:02d}"
        peak = local.weekday() in tf.peak_days and tf.peak_start <= hhmm < tf.peak_end
        return Decimal(repr(tf.peak_factor if peak else tf.off_peak_factor))

    def credits_milli(self, model: str, tokens: CallTokens, when: dt.datetime) -> int | None:
        """Milli-credits the call costs; None if the plan does not price the model."""
        price = next((p for p in self.plan.prices if fnmatch.fnmatchcase(model, p.pattern)), None)
        if price is None:
            return None
        fresh = tokens.prompt - tokens.cached
        per_10k = (
            Decimal(repr(price.input)) * fresh
            + Decimal(repr(price.cached_input)) * tokens.cached
            + Decimal(repr(price.output)) * tokens.completion
        )
        return math.ceil(per_10k * self.factor(when) / 10)
