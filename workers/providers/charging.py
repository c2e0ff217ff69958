"""What a message's call is charged at grant, and what its answer teaches.

On a credit plan the grant reserves the most the call can bill (`CallBound`): its
prompt's estimated tokens times the account's learned input bound
(`scheduler.quota.tokenbound`), plus the request's output bound, at the highest time
factor of its possible arrival. The answer's `usage` then settles the true cost
(`client.usage_cost`) and teaches the bound.
"""

from __future__ import annotations

import logging

from scheduler.quota.plans import Account
from workers.providers.classify import Usage
from workers.providers.client import (
    CallBound,
    ChatRequest,
    estimate_prompt_tokens,
    request_cost,
)
from workers.providers.failover import Route, RouteEntry

__all__ = ["Charges", "learn"]

log = logging.getLogger(__name__)


class Charges:
    """What each account is charged at grant for `message`, and the token bound that
    charge was made from (credit plans): `_handle` settles against it and teaches the
    input bound with what the call really used."""

    def __init__(self, message: ChatRequest, route: Route, now_ms: int) -> None:
        self.message, self.now_ms = message, now_ms
        self.entries = {e.name: e for e in route.entries}
        self.estimated = estimate_prompt_tokens(message)
        self.made: dict[str, tuple[dict[str, int], CallBound | None]] = {}

    def cost(self, account: Account) -> dict[str, int]:
        entry, model = self.entries[account.name], self.message.model
        when = entry.client.calendar().at(self.now_ms)
        until = entry.client.arrival_until(when)
        bound = self._bound(entry)
        charged = request_cost(account, model, when, bound=bound, until=until)
        self.made[account.name] = (charged, bound)
        return charged

    def _bound(self, entry: RouteEntry) -> CallBound | None:
        output = self.message.output_bound
        if not entry.account.plan.credit_windows or output is None:
            return None
        tokens = entry.input_bound.bound(self.message.model, self.estimated)
        return CallBound(input=tokens, output=output, estimated=self.estimated)


def learn(
    entry: RouteEntry, model: str, request_id: str, usage: Usage | None, bound: CallBound | None
) -> None:
    """Teach the account's input bound what this prompt really used, and say so when
    the call billed more than its grant reserved (it settles its true cost anyway)."""
    if bound is None or usage is None or usage.prompt_tokens is None:
        return
    if entry.input_bound.record(model, bound.estimated, usage.prompt_tokens, bound.input):
        log.warning(
            "input bound exceeded account=%s model=%s request=%s: %d prompt tokens, bound %d",
            entry.name,
            model,
            request_id,
            usage.prompt_tokens,
            bound.input,
        )
    if (usage.completion_tokens or 0) > bound.output:
        log.warning(
            "output bound exceeded account=%s request=%s: %d completion tokens, bound %d",
            entry.name,
            request_id,
            usage.completion_tokens or 0,
            bound.output,
        )
