"""Which account serves a message: main first, then fallbacks, each maybe a pool of keys.

A *pool* is a run of consecutive accounts of one provider and base URL (several keys
on one plan). Within a pool the key whose budget frees first is used; every key has
its own limiter and circuit, so one key's exhaustion never marks another exhausted
(a bug other tools shipped). A fallback is taken when every key of the pools before
it is blocked by the provider, out of service (circuit open), or would only free up
after more than `max_wait_ms`: a short wait for main is cheaper than a fallback.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx
import redis as redis_lib

from scheduler.config import Settings
from scheduler.quota.circuit import Circuit
from scheduler.quota.ledger import ChargeLedger
from scheduler.quota.limiter import Denial, DenialReason, Grant, Limiter
from scheduler.quota.plans import Account
from scheduler.quota.readings import ProviderReadings
from scheduler.quota.timeofday import IDENTITY, Calendar
from scheduler.quota.tokenbound import InputBound
from workers.providers.client import DEFAULT_TIMEOUT, ProviderClient
from workers.providers.quota import QuotaPoller

__all__ = [
    "DEFAULT_LEASE_MS",
    "DEFAULT_MAX_WAIT_MS",
    "Choice",
    "NoAccount",
    "Route",
    "RouteEntry",
    "build_route",
    "choose",
    "pools",
]

# Waiting up to one Synthetic regeneration tick (15 min) for main beats paying for a
# fallback; longer than that, the review is better served elsewhere.
DEFAULT_MAX_WAIT_MS = 15 * 60_000
# Renewed every third of this while a call runs, so a dead worker's slot frees in a
# minute while a five-minute cold start keeps its slot.
DEFAULT_LEASE_MS = 60_000


@dataclass(frozen=True, slots=True)
class RouteEntry:
    """One account and everything that acts for it."""

    account: Account
    limiter: Limiter
    client: ProviderClient
    poller: QuotaPoller
    input_bound: InputBound
    ledger: ChargeLedger

    @property
    def name(self) -> str:
        return self.account.name


@dataclass(frozen=True, slots=True)
class Route:
    """The ordered accounts a message may use, main first."""

    entries: tuple[RouteEntry, ...]
    circuit: Circuit
    max_wait_ms: int = DEFAULT_MAX_WAIT_MS
    lease_ms: int = DEFAULT_LEASE_MS
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if not self.entries:
            raise ValueError("a route needs at least one account")
        if self.max_wait_ms < 0 or self.lease_ms <= 0:
            raise ValueError("max_wait_ms must be >= 0 and lease_ms > 0")
        object.__setattr__(self, "names", tuple(e.name for e in self.entries))


@dataclass(frozen=True, slots=True)
class Choice:
    """Budget granted on `entry`: the caller must release `grant.lease_id`. `cost` is
    what the grant charged each window."""

    entry: RouteEntry
    grant: Grant
    cost: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NoAccount:
    """Nothing can serve now. `until_ms` is the earliest moment one account frees
    (None: only a person can help, e.g. every circuit is open)."""

    until_ms: int | None
    reason: str
    account: str | None
    kind: DenialReason | None = None  # the limiter's denial reason


CostFn = Callable[[Account], Mapping[str, int]]


def pools(entries: Sequence[RouteEntry]) -> list[tuple[RouteEntry, ...]]:
    """Consecutive accounts of one provider and base URL form a pool, in route order."""
    out: list[list[RouteEntry]] = []
    for entry in entries:
        last = out[-1][-1].account if out else None
        if last and (last.provider, last.base_url) == (
            entry.account.provider,
            entry.account.base_url,
        ):
            out[-1].append(entry)
        else:
            out.append([entry])
    return [tuple(p) for p in out]


@dataclass(slots=True)
class _Best:
    """The soonest-freeing denied account seen so far."""

    wait_ms: int | None = None
    until_ms: int | None = None
    reason: str = ""
    account: str | None = None
    kind: DenialReason | None = None

    def offer(self, name: str, denial: Denial) -> None:
        wait = denial.retry_after_ms
        if wait is not None and (self.wait_ms is None or wait < self.wait_ms):
            self.wait_ms, self.until_ms = wait, denial.now_ms + wait
            where = f" ({denial.window})" if denial.window else ""
            self.reason, self.account = f"{name}: {denial.reason}{where}", name
            self.kind = denial.reason


def choose(
    route: Route,
    cost: CostFn,
    *,
    pr: str,
    request_id: str,
    model: str,
    estimate: Mapping[str, int] | None = None,
) -> Choice | NoAccount:
    """Acquire budget on the first account that can serve, pool by pool. `estimate`
    (the PR's, milli-units per window) says whether the PR is large on an account
    with an adaptive reserve (`Limiter.is_large`).

    Denials charge nothing, so trying each key of a pool in turn is free. If a pool's
    soonest key frees within `max_wait_ms` (and is not provider-blocked), the answer is
    to wait for it rather than fall back.
    """
    overall, parked = _Best(), []
    for pool in pools(route.entries):
        best = _Best()
        for entry in pool:
            state = route.circuit.state(entry.name)
            if state is not None:
                parked.append(f"{entry.name}: {state.message}")
                continue
            if (missing := entry.client.key_missing()) is not None:
                parked.append(f"{entry.name}: {missing}")
                continue
            charged = dict(cost(entry.account))
            large = estimate is not None and entry.limiter.is_large(estimate)
            result = entry.limiter.acquire(
                charged, pr, request_id, route.lease_ms, model=model, large=large
            )
            # Counted for /metrics: grants, and denials by reason.
            decision = "grant" if isinstance(result, Grant) else f"deny:{result.reason}"
            route.circuit.tally(entry.name, decision)
            if isinstance(result, Grant):
                return Choice(entry, result, charged)
            overall.offer(entry.name, result)
            if result.reason is not DenialReason.COOLDOWN:
                best.offer(entry.name, result)
        if best.wait_ms is not None and best.wait_ms <= route.max_wait_ms:
            return NoAccount(best.until_ms, best.reason, best.account, best.kind)
    if overall.until_ms is not None:
        return NoAccount(overall.until_ms, overall.reason, overall.account, overall.kind)
    reason = "; ".join(parked) or "no account can ever fit this request (cost exceeds a window)"
    return NoAccount(None, reason, None)


def build_route(
    settings: Settings,
    redis: redis_lib.Redis,
    *,
    env: Mapping[str, str] = os.environ,
    accounts: Sequence[str] | None = None,
    transport: httpx.BaseTransport | None = None,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    max_wait_ms: int = DEFAULT_MAX_WAIT_MS,
    lease_ms: int = DEFAULT_LEASE_MS,
    poll_interval_ms: int | None = None,
    circuit: Circuit | None = None,
    clock: Callable[[], int] | None = None,
    key_prefix: str = "reviewq",
    window_maps: Mapping[str, Mapping[str, str]] | None = None,
    calendar: Callable[[], Calendar] = lambda: IDENTITY,
) -> Route:
    """A route over `accounts` (names, main first; default: all, in config order).

    `clock` is the limiters' test-only clock (see `Limiter`). `window_maps` gives an
    account's `QuotaPoller` its provider-window -> plan-window map (see `quota`).
    `poll_interval_ms` overrides every account's quota poll interval (`simulate`
    compresses it); else an account's `quota_poll_ms`, else its provider's default.
    `calendar` is what time factors are read on (`scheduler.quota.timeofday`).
    """
    chosen = [settings.account(n) for n in accounts] if accounts else list(settings.accounts)
    bound_policy = settings.review.input_bound
    entries = []
    for account in chosen:
        limiter = Limiter(redis, account, key_prefix=key_prefix, clock=clock)
        client = ProviderClient(
            account, env=env, transport=transport, timeout=timeout, calendar=calendar
        )
        poller = QuotaPoller(
            client,
            limiter,
            interval_ms=poll_interval_ms or account.quota_poll_ms,
            window_map=(window_maps or {}).get(account.name),
            readings=ProviderReadings(redis, account.name, key_prefix=key_prefix),
        )
        bound = InputBound(redis, account.name, key_prefix=key_prefix, policy=bound_policy)
        ledger = ChargeLedger(redis, account.name, key_prefix=key_prefix)
        entries.append(RouteEntry(account, limiter, client, poller, bound, ledger))
    return Route(
        entries=tuple(entries),
        circuit=circuit or Circuit(redis, key_prefix=key_prefix),
        max_wait_ms=max_wait_ms,
        lease_ms=lease_ms,
    )
