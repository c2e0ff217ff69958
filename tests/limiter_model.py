"""A pure-Python reference model of the limiter, written from `docs/limiter.md` alone.

It never looks at the Lua scripts, nor at what they are generated from: it imports no
`Policy` or `Window`, calls no `Policy.caps()` or `Window.regen_milli`, and computes the
caps, the regeneration per tick and the lengthened durations from the doc's formulas
itself, in exact decimal arithmetic (`caps`, `regen` below; `tests/test_limiter_caps.py`
checks them against hand-computed rows). The plan and policy it is given are only read
as data: names, limits, durations, ticks, fractions. The property test drives it and
the real `Limiter` with the same operations and demands identical answers, so a bug
would have to be made twice, in two different ways, to go unnoticed. Clarity over
speed: every `used` is a fresh sum over the live charges, every wait a walk over
future expiry times.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Protocol

from scheduler.quota.results import Denial, Grant

__all__ = ["INF", "ModelLimiter", "Snapshot", "caps", "exact", "regen"]

INF = math.inf
Cost = int | Mapping[str, int]
# The contract's ids (docs/limiter.md, "Ids"): sync books its charges under request ids
# "~sync:<window>:<n>:<n>", so no request may take one.
SYNC_ID = re.compile(r"~sync:[A-Za-z0-9_]+:[-+.e0-9]+:[-+.e0-9]+")


# ------------------------------------------------------------- the doc's formulas


def exact(x: float | int | str) -> Fraction:
    """The decimal number a person wrote (`0.1` is one tenth, not the binary float
    nearest to it): the doc's formulas are about those numbers."""
    return Fraction(repr(x)) if isinstance(x, float) else Fraction(x)


def caps(
    limit: int, headroom: float = 0.0, reserve: float = 0.0, pr_share: float = 1.0
) -> tuple[int, int, int]:
    """docs/limiter.md, "Caps": `hi = floor(L * (1 - headroom))`,
    `lo = floor(L * (1 - headroom - reserve))`, `share = floor(L * pr_share)`."""
    h, r, s = exact(headroom), exact(reserve), exact(pr_share)
    return (
        math.floor(limit * (1 - h)),
        math.floor(limit * (1 - h - r)),
        math.floor(limit * s),
    )


def regen(limit: int, tick_percent: float) -> int:
    """docs/limiter.md, "State of one account": `G = round(L * tick_percent / 100)`,
    to the nearest integer, a half to the even one, and never below 1."""
    g = exact(limit) * exact(tick_percent) / 100
    whole, rest, half = math.floor(g), g - math.floor(g), Fraction(1, 2)
    up = rest > half or (rest == half and whole % 2 == 1)
    return max(1, whole + 1 if up else whole)


class WindowData(Protocol):
    """What the model reads of a window: data only."""

    name: str
    kind: str
    limit_milli: int
    duration_ms: int
    tick_ms: int | None
    tick_percent: float | None


class PlanData(Protocol):
    name: str
    concurrency: int | None
    concurrency_per_model: bool

    @property
    def windows(self) -> Sequence[WindowData]: ...


class PolicyData(Protocol):
    headroom: float
    reserve: float
    pr_share: float
    arrival_margin_ms: int


@dataclass(frozen=True)
class Win:
    """One window as the contract enforces it: the duration lengthened by the arrival
    margin, and its caps and regeneration computed from the doc's formulas."""

    name: str
    kind: str
    limit: int
    duration: int
    tick: int
    regen: int
    hi: int
    lo: int
    share: int

    @classmethod
    def of(cls, w: WindowData, policy: PolicyData) -> Win:
        hi, lo, share = caps(w.limit_milli, policy.headroom, policy.reserve, policy.pr_share)
        regenerating = w.kind == "regenerating"
        return cls(
            name=w.name,
            kind=w.kind,
            limit=w.limit_milli,
            duration=w.duration_ms + policy.arrival_margin_ms,
            tick=(w.tick_ms or 0) if regenerating else 0,
            regen=regen(w.limit_milli, w.tick_percent or 0) if regenerating else 0,
            hi=hi,
            lo=lo,
            share=share,
        )


def _check_ids(pr: str, request_id: str, model: str) -> None:
    """Any text is an id, except what the contract rules out: an empty PR id or request
    id, a '|' in a PR id or a model, and a request id of sync's form."""
    if pr == "" or "|" in pr:
        raise ValueError(f"bad PR id {pr!r}")
    if request_id == "" or SYNC_ID.fullmatch(request_id):
        raise ValueError(f"bad request id {request_id!r}")
    if "|" in model:
        raise ValueError(f"bad model {model!r}")


@dataclass
class _Charge:
    """One granted request: grant time, PR and cost per window (plan order)."""

    t: int
    pr: str
    costs: list[int]


@dataclass
class _Bucket:
    """A regenerating window's (remaining, anchor)."""

    r: int
    a: int


@dataclass(frozen=True)
class Snapshot:
    """What `Limiter.status()` shows, reduced to the facts the contract defines."""

    used: dict[str, int]
    pr_used: dict[str, dict[str, int]]
    leases: dict[str, int] = field(default_factory=dict)
    block: tuple[int, str] | None = None
    # per window, hi - lo: the reserve in force (the policy's until `set_reserve`)
    reserve: dict[str, int] = field(default_factory=dict)


class ModelLimiter:
    """Same operations and result shapes as `scheduler.quota.limiter.Limiter`."""

    def __init__(self, plan: PlanData, policy: PolicyData, clock: Callable[[], int]) -> None:
        self.plan_name = plan.name
        self.concurrency = plan.concurrency
        self.per_model = plan.concurrency_per_model
        self.clock = clock
        # A charge counts for its window plus the policy's arrival margin (the contract).
        self.windows: tuple[Win, ...] = tuple(Win.of(w, policy) for w in plan.windows)
        self.longest = max((w.duration for w in self.windows), default=0)
        self.charges: dict[str, _Charge] = {}
        # PR-less charges added by `sync` to rolling windows: window name -> [(t, cost)].
        self.sync_charges: dict[str, list[tuple[int, int]]] = {w.name: [] for w in self.windows}
        self.buckets: dict[str, _Bucket] = {}
        self.leases: dict[str, int] = {}
        self.block_state: tuple[int, str] | None = None
        # The reserve in force, once set: window name -> amount kept (docs/limiter.md).
        self.reserve_set: dict[str, int] | None = None

    # ----------------------------------------------------------------- time and state

    def _now(self) -> int:
        """Read the clock once per operation and forget what has left every window."""
        now = int(self.clock())
        self.charges = {rid: c for rid, c in self.charges.items() if now < c.t + self.longest}
        for w in self.windows:
            self.sync_charges[w.name] = [
                (t, c) for t, c in self.sync_charges[w.name] if now < t + w.duration
            ]
        return now

    def _bucket(self, w: Win, now: int) -> _Bucket:
        """The bucket of regenerating window `w`, brought to `now` as the doc says."""
        b = self.buckets.setdefault(w.name, _Bucket(w.limit, now))
        limit, tick = w.limit, w.tick
        if b.r >= limit:
            b.r, b.a = limit, now
            return b
        k = (now - b.a) // tick
        if k > 0:
            b.r = min(limit, b.r + k * w.regen)
            b.a = b.a + k * tick
            if b.r >= limit:
                b.r, b.a = limit, now
        return b

    def _costs(self, cost: Cost) -> list[int]:
        if isinstance(cost, int):
            return [cost] * len(self.windows)
        return [int(cost.get(w.name, 0)) for w in self.windows]

    def _log(self, i: int, pr: str | None) -> list[tuple[int, int]]:
        """(grant time, cost) of every charge in window i's log, or only PR `pr`'s."""
        w = self.windows[i]
        out = [(c.t, c.costs[i]) for c in self.charges.values() if pr is None or c.pr == pr]
        if pr is None and w.kind == "rolling":
            out += self.sync_charges[w.name]
        return out

    @staticmethod
    def _sum_at(log: list[tuple[int, int]], duration: int, when: int) -> int:
        """Sum of the costs that still count at `when` (a charge counts while when < t+D)."""
        return sum(c for t, c in log if when < t + duration)

    def _used(self, i: int, now: int) -> int:
        w = self.windows[i]
        if w.kind == "regenerating":
            return w.limit - self._bucket(w, now).r
        return self._sum_at(self._log(i, None), w.duration, now)

    def _pr_used(self, i: int, pr: str, now: int) -> int:
        return self._sum_at(self._log(i, pr), self.windows[i].duration, now)

    # ------------------------------------------------------------------------- waits

    @classmethod
    def _walk(cls, log: list[tuple[int, int]], duration: int, now: int, fits: int) -> float:
        """ms until the log's live sum first drops to `fits` or below (INF: never).

        The sum only changes when a charge expires, so trying `now` and then every
        future expiry time, in order, finds the first moment exactly.
        """
        times = [now, *sorted({t + duration for t, _ in log if t + duration > now})]
        for when in times:
            if cls._sum_at(log, duration, when) <= fits:
                return when - now
        return INF

    def _bucket_wait(self, w: Win, now: int, after: int, cap: int) -> float:
        b = self._bucket(w, now)
        need = after - cap
        if need <= 0:
            return 0
        if b.r + need > w.limit:
            return INF
        return b.a + -(-need // w.regen) * w.tick - now

    def lo_in_force(self, w: Win) -> int:
        """The line of a PR over its share: the policy's, or hi less the reserve set."""
        if self.reserve_set is None:
            return w.lo
        return w.hi - self.reserve_set[w.name]

    def _window_waits(
        self, i: int, cost: int, pr: str, now: int, large: bool = False
    ) -> list[tuple[str, str | None, float]]:
        w = self.windows[i]
        hi, lo, share = w.hi, self.lo_in_force(w), w.share
        used, pr_used = self._used(i, now), self._pr_used(i, pr, now)
        after, over = used + cost, large or pr_used + cost > share
        if not (after > hi or (over and after > lo)):
            return []
        t_sh = self._walk(self._log(i, pr), w.duration, now, share - cost)
        if w.kind == "regenerating":
            t_hi = self._bucket_wait(w, now, after, hi)
            t_lo = self._bucket_wait(w, now, after, lo)
        else:
            log = self._log(i, None)
            t_hi = self._walk(log, w.duration, now, hi - cost)
            t_lo = self._walk(log, w.duration, now, lo - cost)
        out: list[tuple[str, str | None, float]] = [("window", w.name, t_hi)]
        if over:
            if large or t_lo <= t_sh:
                out.append(("reserve", w.name, t_lo))
            else:
                out.append(("pr_share", w.name, t_sh))
        return out

    def _concurrency_wait(self, lease: str, model: str, now: int) -> float:
        cap = self.concurrency
        if cap is None or self.leases.get(lease, 0) > now:
            return 0
        prefix = f"{model}|" if self.per_model else ""
        live = sorted(d for lid, d in self.leases.items() if d > now and lid.startswith(prefix))
        if len(live) >= cap:
            return live[len(live) - cap] - now
        return 0

    def _cooldown_wait(self, now: int) -> float:
        if self.block_state is not None and self.block_state[0] > now:
            return self.block_state[0] - now
        return 0

    def waits(
        self,
        costs: list[int],
        pr: str,
        request_id: str,
        model: str,
        now: int,
        large: bool = False,
    ) -> list[tuple[str, str | None, float]]:
        """Every constraint's wait, in tie-break order (cooldown, concurrency, windows)."""
        lease = f"{model}|{request_id}"
        out: list[tuple[str, str | None, float]] = [
            ("cooldown", None, self._cooldown_wait(now)),
            ("concurrency", None, self._concurrency_wait(lease, model, now)),
        ]
        if request_id not in self.charges:
            for i in range(len(self.windows)):
                out += self._window_waits(i, costs[i], pr, now, large)
        return out

    # ----------------------------------------------------------------- the operations

    def decide(
        self, cost: Cost, pr: str, request_id: str, *, model: str = "", large: bool = False
    ) -> tuple[str, str | None, float]:
        """(reason, window, wait) of the binding constraint; wait 0 means a grant.

        Changes nothing (beyond forgetting expired records), so tests may ask freely.
        """
        now = self._now()
        worst: tuple[str, str | None, float] = ("", None, 0)
        for item in self.waits(self._costs(cost), pr, request_id, model, now, large):
            if item[2] > worst[2]:  # strictly larger: the earlier constraint wins ties
                worst = item
        return worst

    def acquire(
        self,
        cost: Cost,
        pr: str,
        request_id: str,
        lease_ms: int,
        *,
        model: str = "",
        large: bool = False,
    ) -> Grant | Denial:
        _check_ids(pr, request_id, model)
        reason, window, wait = self.decide(cost, pr, request_id, model=model, large=large)
        now = self._now()
        costs = self._costs(cost)
        if wait > 0:
            retry = None if wait == INF else int(wait)
            return Denial(reason=reason, window=window, retry_after_ms=retry, now_ms=now)
        replayed = request_id in self.charges
        if not replayed:
            for w, c in zip(self.windows, costs, strict=True):
                if w.kind == "regenerating":
                    self._bucket(w, now).r -= c
            self.charges[request_id] = _Charge(now, pr, costs)
        lease = f"{model}|{request_id}"
        self.leases[lease] = now + lease_ms
        remaining = {w.name: w.hi - self._used(i, now) for i, w in enumerate(self.windows)}
        return Grant(lease, request_id, remaining, replayed, now)

    def renew(self, lease_id: str, lease_ms: int) -> bool:
        now = self._now()
        if self.leases.get(lease_id, 0) > now:
            self.leases[lease_id] = now + lease_ms
            return True
        self.leases.pop(lease_id, None)
        return False

    def release(self, lease_id: str) -> bool:
        now = self._now()
        return self.leases.pop(lease_id, 0) > now

    def settle(self, request_id: str, actual_cost: Cost) -> bool:
        now = self._now()
        # A request's charge only: sync's charges are kept apart, by window, not by id.
        charge = self.charges.get(request_id)
        if charge is None:
            return False
        new = self._costs(actual_cost)
        for i, w in enumerate(self.windows):
            if w.kind == "regenerating" and now < charge.t + w.duration:
                b = self._bucket(w, now)
                b.r = min(w.limit, b.r - (new[i] - charge.costs[i]))
        # Rolling windows need no bookkeeping: their sums read the new costs.
        charge.costs = new
        return True

    def refund(self, request_id: str) -> bool:
        found = self.settle(request_id, 0)
        self.charges.pop(request_id, None)
        return found

    def block(self, until_ms: int, reason: str) -> int:
        now = self._now()
        current = self.block_state[0] if self.block_state else 0
        if until_ms > current and until_ms > now:
            self.block_state = (until_ms, reason)
        if self.block_state is not None and self.block_state[0] > now:
            return self.block_state[0]
        return 0

    def sync(self, window: str, used: int, reset_at_ms: int) -> bool:
        now = self._now()
        i = next((i for i, w in enumerate(self.windows) if w.name == window), None)
        if i is None:
            raise ValueError(f"plan {self.plan_name} has no window {window!r}")
        if reset_at_ms <= now:
            return False
        w = self.windows[i]
        if w.kind == "regenerating":
            b = self._bucket(w, now)
            if w.limit - used < b.r:
                b.r, b.a = w.limit - used, reset_at_ms - w.tick
                return True
            return False
        current = self._used(i, now)
        if used > current:
            self.sync_charges[w.name].append((min(now, reset_at_ms - w.duration), used - current))
            return True
        return False

    def set_reserve(self, reserve: Mapping[str, int], demand: str = "", keep: int = 0) -> int:
        """docs/limiter.md, "The reserve in force": each window keeps min(m, hi)."""
        names = {w.name for w in self.windows}
        if set(reserve) - names or any(int(m) < 0 for m in reserve.values()):
            raise ValueError(f"bad reserve {dict(reserve)!r}")
        now = self._now()
        if not self.windows:
            return 0
        self.reserve_set = {w.name: min(int(reserve.get(w.name, 0)), w.hi) for w in self.windows}
        return now

    def leaving(self, by_ms: Mapping[str, int], keep_ms: int = 0) -> dict[str, int]:
        """Per window, what still counts at now + keep_ms and no longer counts at its
        `by_ms` (a window left out: none); a regenerating window has no charges: 0."""
        now = self._now()
        out: dict[str, int] = {}
        for i, w in enumerate(self.windows):
            by = by_ms.get(w.name)
            if w.kind != "rolling" or by is None:
                out[w.name] = 0
                continue
            log = self._log(i, None)
            out[w.name] = sum(c for t, c in log if now + keep_ms < t + w.duration <= by)
        return out

    def future_events(self) -> list[int]:
        """Every future time at which the state changes by itself: charge expiries,
        lease deadlines, the block's end and each regenerating bucket's next tick.
        Tests land the clock exactly on these to probe the boundaries."""
        now = self._now()
        times: set[int] = set()
        for i, w in enumerate(self.windows):
            times |= {t + w.duration for t, _ in self._log(i, None)}
            if w.kind == "regenerating" and w.tick:
                b = self._bucket(w, now)
                if b.r < w.limit:
                    times.add(b.a + w.tick)  # brought to now: a <= now < a+K, or a > now
        times |= set(self.leases.values())
        if self.block_state:
            times.add(self.block_state[0])
        return sorted(t for t in times if t > now)

    def snapshot(self) -> Snapshot:
        """Per-window used and per-PR use (PRs with no live use omitted), live leases,
        and the block if active."""
        now = self._now()
        used = {w.name: self._used(i, now) for i, w in enumerate(self.windows)}
        pr_used: dict[str, dict[str, int]] = {}
        for i, w in enumerate(self.windows):
            prs = {c.pr for c in self.charges.values()}
            per = {p: self._pr_used(i, p, now) for p in sorted(prs)}
            pr_used[w.name] = {p: u for p, u in per.items() if u}
        leases = {lid: d for lid, d in self.leases.items() if d > now}
        block = self.block_state if self.block_state and self.block_state[0] > now else None
        reserve = {w.name: w.hi - self.lo_in_force(w) for w in self.windows}
        return Snapshot(used, pr_used, leases, block, reserve)
