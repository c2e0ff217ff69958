"""One attempt at one message: budget, call, and what the job should do next.

This is the single function the RQ job calls. It never sleeps and never retries by
itself: a wait for quota comes back as `Wait` (the job reschedules itself, outside the
retry count), a transient failure as `Retry` with a jittered delay (the job counts
and the bound is `RetryPolicy.max_retries`). The one loop inside is failover: when
an account turns out to be exhausted or out of service, the next account in the route
is tried at once, and an exhausted account is blocked first, so the loop can never
send it a second request.

A concurrency refusal (`Classified.concurrency_refusal`: `classify` knows which
provider code means "too many calls in flight") is a `Retry`, and it also makes the
limiter's effective concurrency follow the provider's: the slot that was refused is
held by a zero-cost "hold" lease for `RetryPolicy.concurrency_hold_ms`, so while the
provider allows fewer calls than the plan says, one slot per refusal stays out of use.
When the hold lapses the slot is tried again; a provider that really allows it then
serves it. Each refusal is also counted per account under its code
(`Circuit.counters`) for a person to see.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from scheduler.quota.limiter import Denial, DenialReason, Limiter
from workers.heartbeat import Heartbeat
from workers.providers.charging import Charges, learn
from workers.providers.classify import Classified, ResponseClass, Usage
from workers.providers.client import MISSING_KEY, CallBound, ChatRequest, ProviderResult
from workers.providers.failover import Choice, NoAccount, Route, RouteEntry, choose

__all__ = [
    "DEFAULT_BLOCK_MS",
    "DEFAULT_RETRY",
    "MIN_BLOCK_MS",
    "Failed",
    "LeaseHeartbeat",
    "Outcome",
    "Parked",
    "Retry",
    "RetryPolicy",
    "Served",
    "Wait",
    "attempt",
    "jittered_backoff",
]

log = logging.getLogger(__name__)

# A quota refusal without a reset time (rare: the providers we know name one) blocks
# the account for a quarter hour, the shortest quota tick we know; if it is still
# exhausted then, the next refusal blocks it again, so the cost of guessing short is
# one request per quarter hour.
DEFAULT_BLOCK_MS = 15 * 60_000
# A provider that has just refused is not asked again sooner than this, whatever
# reset it named (a reset already past by the limiter's clock, say).
MIN_BLOCK_MS = 5_000
# Statuses that refuse a request before any work is done: no budget was spent.
_REFUSALS = frozenset({401, 402, 403, 404, 429})
_RNG = random.Random()


@dataclass(frozen=True, slots=True)
class Served:
    """A reply. `cost` is what the call was charged in the end, per window (settled
    from `usage`, or the grant's charge when the answer carried none)."""

    content: str = field(repr=False)
    account: str
    usage: Usage | None
    lease_lost: bool = False
    cost: dict[str, int] | None = None
    cut: bool = False  # stopped at the length limit: `content` is partial


# Denials no other PR's message could get past either: the account itself is busy.
_ACCOUNT_WIDE = frozenset({DenialReason.CONCURRENCY, DenialReason.WINDOW, DenialReason.COOLDOWN})


@dataclass(frozen=True, slots=True)
class Wait:
    """No budget now: reschedule for `until_ms` (epoch ms, the limiter's clock)."""

    until_ms: int
    reason: str
    account: str | None
    kind: DenialReason | None = None  # the limiter's reason for the wait

    @property
    def account_wide(self) -> bool:
        """Nothing else could use this account now either (versus a wait that is
        this PR's own: over its share, or the reserve kept for other PRs)."""
        return self.account is not None and self.kind in _ACCOUNT_WIDE


@dataclass(frozen=True, slots=True)
class Retry:
    """A transient failure: run again after `after_ms`; `attempt_count` is how many
    retries this makes, for the caller to pass back in."""

    after_ms: int
    kind: Literal["transient", "garbage"]
    attempt_count: int
    reason: str
    account: str


@dataclass(frozen=True, slots=True)
class Parked:
    """Only a person can help (every usable account's circuit is open)."""

    reason: str
    account: str | None


@dataclass(frozen=True, slots=True)
class Failed:
    """Retrying cannot help: a bad request (split it if `too_long`) or retries used up."""

    reason: str
    account: str | None
    too_long: bool = False


Outcome = Served | Wait | Retry | Parked | Failed


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 5
    base_ms: int = 2_000
    cap_ms: int = 120_000
    # How long a concurrency refusal keeps its refused slot out of use.
    concurrency_hold_ms: int = 60_000


DEFAULT_RETRY = RetryPolicy()


def jittered_backoff(
    attempt_count: int, policy: RetryPolicy = DEFAULT_RETRY, rng: random.Random | None = None
) -> int:
    """Exponential with equal jitter: half the step fixed, half random, so workers that
    failed together spread out yet none retries almost at once."""
    step = min(policy.cap_ms, policy.base_ms << min(max(0, attempt_count - 1), 32))
    half = step // 2
    return half + (rng or _RNG).randint(0, step - half)


class LeaseHeartbeat(Heartbeat):
    """Renews a concurrency lease every `lease_ms / 3` while a call runs.

    A worker that dies stops renewing and its slot frees after `lease_ms`; a slow call
    keeps its slot. `lost` says a renewal found the lease already expired, so the slot
    may have gone to someone else meanwhile (the call is still used: it was paid for).
    """

    def __init__(self, limiter: Limiter, lease_id: str, lease_ms: int) -> None:
        self.limiter, self.lease_id, self.lease_ms = limiter, lease_id, lease_ms
        self.lost = False
        interval_s = max(lease_ms / 3, 1) / 1000
        super().__init__(self._renew, interval_s, name="lease-heartbeat", subject=lease_id)

    @property
    def renewals(self) -> int:
        return self.beats

    def _renew(self) -> bool:
        if self.limiter.renew(self.lease_id, self.lease_ms):
            return True
        self.lost = True
        log.warning("lease lost account=%s lease=%s", self.limiter.account, self.lease_id)
        return False


@dataclass(frozen=True, slots=True)
class _Call:
    """One finished call. `now_ms` is the caller's clock after it, `limiter_now_ms`
    the limiter's (grant time plus elapsed): blocks must be in the limiter's future."""

    entry: RouteEntry
    result: ProviderResult
    request_id: str
    now_ms: int
    limiter_now_ms: int
    lease_lost: bool
    charged: dict[str, int]
    bound: CallBound | None
    released_ms: int  # the limiter's time of the lease's release

    @property
    def c(self) -> Classified:
        return self.result.classified


def attempt(
    message: ChatRequest,
    *,
    pr: str,
    request_id: str,
    route: Route,
    now_ms: int,
    retries: int = 0,
    policy: RetryPolicy = DEFAULT_RETRY,
    rng: random.Random | None = None,
    on_grant: Callable[[Choice], None] | None = None,
    on_release: Callable[[Choice, int], None] | None = None,
    estimate: Mapping[str, int] | None = None,
) -> Outcome:
    """Serve `message` on the first account of `route` that can, or say when to retry.

    `retries` is how many `Retry` outcomes this message already had (the caller counts);
    `request_id` must stay the same across them, so a replayed acquire is not charged
    twice. `on_grant` sees every grant before its call is made (for traces, and for
    waking the next waiter once the slot is released); `on_release` sees each grant
    again with the limiter's time of its release. `estimate` is the PR's, for the
    adaptive reserve's rule on large PRs (`choose`).
    """
    charges = Charges(message, route, now_ms)
    for _ in range(len(route.entries) + 1):
        choice = choose(
            route,
            charges.cost,
            pr=pr,
            request_id=request_id,
            model=message.model,
            estimate=estimate,
        )
        if isinstance(choice, NoAccount):
            return _no_account(choice)
        if on_grant is not None:
            on_grant(choice)
        call = _call(choice, message, route, request_id, now_ms, policy, charges)
        if on_release is not None:
            on_release(choice, call.released_ms)
        route.circuit.tally(call.entry.name, f"response:{call.c.cls.value}:{call.c.code}")
        outcome = _handle(call, route, retries, policy, rng)
        _log(pr, request_id, call, outcome)
        if outcome is not None:
            return outcome
    # Every account was tried and each refused; a block shorter than the call itself
    # could let one come back, so wait out the default rather than loop.
    return Wait(now_ms + DEFAULT_BLOCK_MS, "every account refused this attempt", None)


def _no_account(choice: NoAccount) -> Outcome:
    if choice.until_ms is None:
        return Parked(choice.reason, choice.account)
    return Wait(choice.until_ms, choice.reason, choice.account, choice.kind)


def _call(
    choice: Choice,
    message: ChatRequest,
    route: Route,
    request_id: str,
    now: int,
    policy: RetryPolicy,
    charges: Charges,
) -> _Call:
    entry, lease_id = choice.entry, choice.grant.lease_id
    charged, bound = charges.made[entry.name]
    if not choice.grant.replayed:  # a replay was charged, and counted, by its first run
        entry.ledger.add(charged)
    try:
        with LeaseHeartbeat(entry.limiter, lease_id, route.lease_ms) as beat:
            result = entry.client.complete(message, now_ms=now)
    finally:
        released_ms = entry.limiter.release_at(lease_id)[1]
    now += result.elapsed_ms
    limiter_now = choice.grant.now_ms + result.elapsed_ms
    call = _Call(
        entry, result, request_id, now, limiter_now, beat.lost, charged, bound, released_ms
    )
    if call.c.concurrency_refusal:
        # Next thing after the release: until the hold lands the refused slot looks
        # free, and a worker that takes it meanwhile meets a refusal of its own.
        _hold_slot(call, policy)
    return call


def _handle(
    call: _Call, route: Route, retries: int, policy: RetryPolicy, rng: random.Random | None
) -> Outcome | None:
    """What the class asks for; None means: fail over to the next account."""
    c, limiter, name = call.c, call.entry.limiter, call.entry.name
    unspent = not call.result.sent or call.result.status in _REFUSALS
    # The provider did no work for a refusal: the charge goes back, and off the ledger.
    if c.cls is not ResponseClass.OK and unspent and limiter.refund(call.request_id):
        call.entry.ledger.add(call.charged, -1)
    # After the refund: a synced count must not include a charge about to vanish.
    call.entry.poller.observe(call.result, call.now_ms)
    if c.cls is ResponseClass.OK:
        cost = call.result.cost
        if cost is not None and limiter.settle(call.request_id, cost):
            call.entry.ledger.add({w: cost.get(w, 0) - c for w, c in call.charged.items()})
        learn(call.entry, call.result.model, call.request_id, call.c.usage, call.bound)
        if call.entry.poller.polls_while_busy:
            call.entry.poller.maybe_poll(call.now_ms)
        return Served(
            c.content or "", name, c.usage, call.lease_lost, cost or call.charged, cut=c.cut
        )
    if c.cls is ResponseClass.WINDOW_EXHAUSTED:
        until = c.reset_at_ms or call.limiter_now_ms + DEFAULT_BLOCK_MS
        # Never a block already over by the limiter's clock: that would invite a
        # second request to an account that has just refused one.
        until = max(until, call.limiter_now_ms + MIN_BLOCK_MS)
        limiter.block(until, f"{c.code}: {c.message}"[:300])
        call.entry.poller.request_poll()
        call.entry.poller.maybe_poll(call.now_ms)
        return None
    if c.cls is ResponseClass.NEEDS_PERSON and c.code == MISSING_KEY:
        # A configuration fact, checked again when `reviewq worker` starts (it refuses
        # to start without every key): no circuit, so setting the key is the whole fix.
        log.error("account %s skipped: %s", name, c.message)
        return None
    if c.cls is ResponseClass.NEEDS_PERSON:
        route.circuit.open(name, c.code, c.message, now_ms=call.now_ms)
        log.error("account %s needs a person: %s", name, c.message)
        return None
    if c.cls is ResponseClass.BAD_REQUEST:
        return Failed(c.message, name, too_long=c.too_long)
    return _retry(call, route, retries, policy, rng)


def _retry(
    call: _Call, route: Route, retries: int, policy: RetryPolicy, rng: random.Random | None
) -> Outcome | None:
    """TRANSIENT and GARBAGE: a jittered retry, honouring any wait the provider named;
    a named wait longer than `max_wait_ms` blocks the account and fails over instead."""
    c, name = call.c, call.entry.name
    if c.concurrency_refusal:
        route.circuit.note(name, c.code)
    hint = 0 if c.reset_at_ms is None else c.reset_at_ms - call.now_ms
    if hint > route.max_wait_ms:
        call.entry.limiter.block(c.reset_at_ms or 0, f"{c.code}: {c.message}"[:300])
        return None
    count = retries + 1
    if count > policy.max_retries:
        return Failed(f"gave up after {retries} retries: {c.message}", name)
    kind: Literal["transient", "garbage"] = (
        "garbage" if c.cls is ResponseClass.GARBAGE else "transient"
    )
    after = max(jittered_backoff(count, policy, rng), hint)
    return Retry(after, kind, count, c.message, name)


def _hold_slot(call: _Call, policy: RetryPolicy) -> None:
    """Keep the slot the provider refused out of use for a while (see module doc).

    The hold is a lease of its own, named after the refusal's code (`~<code>-hold`),
    with its own request id: the retried message keeps its id, and a replayed acquire
    would otherwise walk straight back into its own slot. Release and hold are two
    scripts, so another worker can still take the slot between them; its request then
    meets a refusal of its own and places the hold."""
    holder = f"~{call.c.code}-hold"
    hold_id = f"{holder}.{call.request_id}.{call.now_ms}"
    held = call.entry.limiter.acquire(0, holder, hold_id, policy.concurrency_hold_ms)
    if isinstance(held, Denial):  # usually "concurrency": the slot was taken first
        log.info("%s not placed account=%s: %s", holder, call.entry.name, held.reason)


def _log(pr: str, request_id: str, call: _Call, outcome: Outcome | None) -> None:
    what = "failover" if outcome is None else type(outcome).__name__.lower()
    log.info(
        "attempt pr=%s request=%s account=%s class=%s code=%s -> %s",
        pr,
        request_id,
        call.entry.name,
        call.c.cls.value,
        call.c.code,
        what,
    )
