"""Credits from tokens: the per-model price tables of credit plans, and the arithmetic.

Z.AI's V3 Coding Plan (2026-07-30) meters each call as
`(input x m_in + cached_input x m_cached + output x m_out) / 10,000` credits, reasoning
tokens billed as output, times the time-of-day factor at the request's arrival
(`timeofday`). Prices are plan data with a date and a source, overridable in config;
this module only multiplies. Amounts are exact (decimal prices as fractions) and
rounded up once, to milli-credits, so a reservation is never a milli-credit short.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["PER_TOKENS", "ModelPrice", "TokenCounts", "credits_milli", "find_price"]

# Prices are quoted per this many tokens (the facts' "/ 10,000").
PER_TOKENS = 10_000


class ModelPrice(BaseModel):
    """Credits per `PER_TOKENS` tokens for models matching `pattern` (fnmatch, first
    match wins): plain input, input served from the provider's cache, and output
    (reasoning included). Cache writes have no listed rate: they are charged as input."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pattern: str = Field(min_length=1)
    input: float = Field(ge=0)
    cached_input: float = Field(ge=0)
    output: float = Field(ge=0)


@dataclass(frozen=True, slots=True)
class TokenCounts:
    """One call's tokens. `input` counts every prompt token, `cached` the part of them
    the provider served from its cache (OpenAI's `prompt_tokens_details`), `output`
    every completion token, reasoning included."""

    input: int
    cached: int = 0
    output: int = 0

    def __post_init__(self) -> None:
        if min(self.input, self.cached, self.output) < 0:
            raise ValueError(f"token counts must be >= 0, got {self}")


def find_price(prices: Sequence[ModelPrice], model: str) -> ModelPrice | None:
    return next((p for p in prices if fnmatch.fnmatchcase(model, p.pattern)), None)


def _exact(value: float) -> Fraction:
    """6.9 as 69/10, not as the binary float nearest to it."""
    return Fraction(repr(value))


def credits_milli(price: ModelPrice, tokens: TokenCounts, factor: float) -> int:
    """Milli-credits one call costs at a time-of-day `factor`, rounded up."""
    cached = min(tokens.cached, tokens.input)
    total = (
        _exact(price.input) * (tokens.input - cached)
        + _exact(price.cached_input) * cached
        + _exact(price.output) * tokens.output
    )
    return math.ceil(total * _exact(factor) * 1000 / PER_TOKENS)
