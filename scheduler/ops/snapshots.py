"""The shape of `reviewq inspect`'s snapshot, which is also its `--json` output.

Amounts are milli-units (`*_milli`) and times epoch milliseconds (`*_ms`) or spans in
milliseconds (`*_in_ms`, `waited_ms`), as stored: the JSON carries numbers, and the
tables (`scheduler.cli.inspect_view`) format them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from scheduler.ops.credit_views import DeferredView, ProviderView

__all__ = [
    "AccountView",
    "BlockView",
    "CircuitView",
    "Eta",
    "LeaseView",
    "MessageCounts",
    "MessageView",
    "PrSummary",
    "QueueCounts",
    "Snapshot",
    "WindowView",
]


class QueueCounts(BaseModel):
    """RQ's own counts for the queue, then reviewq's: messages waiting for an
    account's budget (per account line), waiting on a time of their own, running."""

    queued: int
    started: int
    scheduled: int
    deferred: int
    failed: int
    waiting_for_budget: dict[str, int]
    timed: int
    running: int


class WindowView(BaseModel):
    """One quota window now; `free_milli` is what may still be spent (the spendable
    part, under the policy's headroom, minus what is used)."""

    name: str
    kind: str
    unit: str
    used_milli: int
    limit_milli: int
    spendable_milli: int
    free_milli: int
    percent: float
    next_free_at_ms: int | None
    next_free_in_ms: int | None
    # The reserve in force (PRs over their share stop at spendable minus it), whether
    # the waker sized it from demand, and that demand (docs/reserve.md): `recent` and
    # `queued` under-share work, `leaving` the use that leaves by the next burst, `lent`
    # whether the burst's room is lent whole; milli-units.
    reserve_milli: int = 0
    reserve_adaptive: bool = False
    reserve_demand: dict[str, int] | None = None


class LeaseView(BaseModel):
    lease_id: str
    expires_in_ms: int


class BlockView(BaseModel):
    """The provider said stop (a 429 with a reset time): no grants until `until_ms`."""

    until_ms: int
    in_ms: int
    reason: str


class CircuitView(BaseModel):
    """Out of service until a person closes it (`expires_in_ms` None: never by itself)."""

    code: str
    message: str
    opened_at_ms: int
    expires_in_ms: int | None


class AccountView(BaseModel):
    name: str
    provider: str
    plan: str
    concurrency: int | None
    in_use: int
    leases: list[LeaseView]
    block: BlockView | None
    circuit: CircuitView | None
    windows: list[WindowView]
    # The provider's own readings, the key's detected kind, the input bound.
    provider_view: ProviderView | None = None


class Eta(BaseModel):
    """When a PR's review should be done. `kind`: `estimate` (a figure, see
    `estimate_eta`), `not_before` (budget must free first; at least this late),
    `finished` (`at_ms` is when), `unknown` (`reason` says why)."""

    kind: Literal["estimate", "not_before", "finished", "unknown"]
    at_ms: int | None = None
    in_ms: int | None = None
    reason: str = ""


class MessageView(BaseModel):
    id: str
    status: str
    reason: str | None
    account: str | None
    retries: int
    waits: int
    runs: int
    retry_at_ms: int | None
    started_ms: int | None
    finished_ms: int | None


class MessageCounts(BaseModel):
    """The current head's messages; `total` is how many were planned."""

    total: int
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    waiting: int = 0
    running: int = 0
    queued: int = 0
    pending: int = 0


class PrSummary(BaseModel):
    pr: str
    status: str
    head_sha: str
    gen: int
    arrived_ms: int
    first_started_ms: int | None
    finished_ms: int | None
    waited_ms: int
    error: str | None
    messages: MessageCounts
    cost_used_milli: dict[str, dict[str, int]]
    eta: Eta
    detail: list[MessageView] | None = None


class Snapshot(BaseModel):
    now_ms: int
    redis_url: str
    queue_name: str
    prefix: str
    queues: QueueCounts
    accounts: list[AccountView]
    prs_total: int
    prs: list[PrSummary]
    typical_call_ms: int | None
    # PRs whose messages wait for off-peak prices (`scheduler.admission.offpeak`).
    deferred: list[DeferredView] = []
