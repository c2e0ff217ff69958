"""What a call costs the plan's windows: at grant an upper bound, at settle the truth.

Request windows cost the model's weight (peak hours included, for plans that weight
them). Credit windows (Z.AI's V3 plans) cost the call's tokens at the model's price
(`scheduler.quota.pricing`) and the time factor of the request's arrival: at grant the
most it can bill (`CallBound`: the learned input bound and the output bound, at the
highest factor between grant and latest arrival), at settle what `usage` reports, at
that same factor, so the rest of the reservation returns at once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from scheduler.quota.plans import Account, Plan
from scheduler.quota.pricing import TokenCounts, credits_milli
from workers.providers.classify import Usage

__all__ = ["MONEY_CHARGE_MILLI", "CallBound", "request_cost", "usage_cost"]

_MONEY_UNITS = frozenset({"usd", "credits"})
# The whole charge a request makes to a money window it cannot price (`request_cost`).
MONEY_CHARGE_MILLI = 1


@dataclass(frozen=True, slots=True)
class CallBound:
    """The most one call can bill, in tokens: what a credit window is charged at grant.
    `input` is the learned bound of the prompt's tokens, `output` the request's
    `output_bound`; `estimated` is the prompt estimate the input bound was made from."""

    input: int
    output: int
    estimated: int


def request_cost(
    account: Account,
    model: str,
    when: dt.datetime | None = None,
    *,
    bound: CallBound | None = None,
    until: dt.datetime | None = None,
) -> dict[str, int]:
    """The acquire-time charge per window: the model's weight in every request window,
    and in a credit window the upper bound of what the call can bill: `bound`'s tokens
    at the model's price and the highest time factor of an arrival in [when, until].

    A money window the plan cannot price (no `bound`, or no price for the model:
    Synthetic's weekly dollars) follows the provider's own numbers (`x-synthetic-quotas`
    and quota polls, through `Limiter.sync`) and is charged only a token milli-unit: a
    zero cost would fit even a window the provider reports spent.
    """
    plan = account.effective_plan
    when = when or dt.datetime.now(dt.UTC)
    weight = plan.cost_milli(model, when)
    cost = {w.name: MONEY_CHARGE_MILLI if w.unit in _MONEY_UNITS else weight for w in plan.windows}
    if bound is not None:
        tokens = TokenCounts(input=bound.input, output=bound.output)
        credits = _credits(plan, model, tokens, when, until)
        if credits is not None:
            cost.update(dict.fromkeys((w.name for w in plan.credit_windows), credits))
    return cost


def usage_cost(
    account: Account,
    model: str,
    usage: Usage,
    when: dt.datetime,
    until: dt.datetime | None = None,
) -> dict[str, int] | None:
    """What a served call really cost per window, from its `usage`, at the same time
    factor its grant was charged. None when a credit window cannot be priced from this
    usage (no token counts): the grant's upper bound then stands."""
    cost = request_cost(account, model, when)
    credit_windows = account.effective_plan.credit_windows
    if not credit_windows:
        return cost
    if usage.prompt_tokens is None or usage.completion_tokens is None:
        return None
    tokens = TokenCounts(usage.prompt_tokens, usage.cached_tokens or 0, usage.completion_tokens)
    credits = _credits(account.effective_plan, model, tokens, when, until)
    if credits is None:
        return None
    cost.update(dict.fromkeys((w.name for w in credit_windows), credits))
    return cost


def _credits(
    plan: Plan, model: str, tokens: TokenCounts, when: dt.datetime, until: dt.datetime | None
) -> int | None:
    price = plan.price_for(model)
    if price is None or not plan.credit_windows:
        return None
    return credits_milli(price, tokens, plan.time_factor(when, until))
