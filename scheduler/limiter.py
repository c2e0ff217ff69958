"""The quota limiter: the only code that touches an account's budget keys.

Every decision runs in one Lua script (see `scheduler/lua/`), so any number of worker
processes on any number of hosts share one exact view, and time comes from Redis
`TIME`, not from skewed worker clocks. The limiter knows nothing of providers, files
or RQ: it takes costs in milli-units, PR ids and request ids.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal

import redis as redis_lib

from scheduler.plans import Account, Plan, Policy, Window

__all__ = [
    "AcquireResult",
    "BlockStatus",
    "Denial",
    "Grant",
    "LeaseStatus",
    "Limiter",
    "LimiterStatus",
    "WindowStatus",
]

Cost = int | Mapping[str, int]
_Arg = bytes | str | int
_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Grant:
    """Budget taken. Keep `lease_id` to renew and release the concurrency slot."""

    lease_id: str
    request_id: str
    remaining: dict[str, int]
    replayed: bool
    now_ms: int
    granted: Literal[True] = True


@dataclass(frozen=True, slots=True)
class Denial:
    """Nothing was charged. `retry_after_ms` is the exact wait if nothing else changes;
    None means this cost can never fit the plan (it exceeds a window's spendable part).

    `reason` is the constraint that sets the wait: `cooldown` (provider block),
    `concurrency`, `window` (the window's spendable part is full), `reserve` (the PR is
    over its share and the rest is reserved for PRs under theirs) or `pr_share` (the
    same, where the PR's own use falling back under its share comes first).
    """

    reason: str
    window: str | None
    retry_after_ms: int | None
    now_ms: int
    granted: Literal[False] = False


AcquireResult = Grant | Denial


@dataclass(frozen=True, slots=True)
class WindowStatus:
    name: str
    kind: str
    unit: str
    limit: int
    spendable: int
    used: int
    next_free_at_ms: int | None
    pr_used: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LeaseStatus:
    lease_id: str
    deadline_ms: int


@dataclass(frozen=True, slots=True)
class BlockStatus:
    until_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class LimiterStatus:
    account: str
    now_ms: int
    concurrency: int | None
    windows: list[WindowStatus]
    leases: list[LeaseStatus]
    block: BlockStatus | None


@cache
def _lua_file(name: str) -> str:
    """Lua files ship in the package (see `scheduler/lua/`)."""
    return (resources.files("scheduler") / "lua" / f"{name}.lua").read_text()


def _script_source(name: str, prelude: str) -> str:
    """The shared helpers, this plan's numbers as literals, then the script itself."""
    return "\n".join((_lua_file("_lib"), prelude, _lua_file(name)))


def _with_arrival_margin(plan: Plan, margin_ms: int) -> Plan:
    """The plan as enforced: each charge counts for its window plus the margin."""
    if margin_ms == 0:
        return plan
    windows = tuple(
        w.model_copy(update={"duration_ms": w.duration_ms + margin_ms}) for w in plan.windows
    )
    return plan.model_copy(update={"windows": windows})


def _window_ttl_ms(window: Window) -> int:
    """Long enough for a charge to leave the window and an empty bucket to refill."""
    ttl = window.duration_ms
    if window.kind == "regenerating" and window.tick_ms and window.tick_percent:
        ticks = -(-100 // int(window.tick_percent)) + 1
        ttl = max(ttl, ticks * window.tick_ms)
    return ttl + _DAY_MS


class Limiter:
    """Budget for one account, shared by every worker that talks to its key.

    `clock` is a test-only path: a callable returning epoch ms that replaces Redis
    `TIME`, so property tests can step time exactly.
    """

    def __init__(
        self,
        redis: redis_lib.Redis,
        account: Account | str,
        plan: Plan | None = None,
        policy: Policy | None = None,
        *,
        key_prefix: str = "reviewq",
        clock: Callable[[], int] | None = None,
    ) -> None:
        if isinstance(account, Account):
            plan = plan or account.effective_plan
            policy = policy or account.policy
            account = account.name
        if plan is None:
            raise TypeError("Limiter needs a plan when given an account name")
        self.redis = redis
        self.account = account
        self.policy = policy or Policy()
        self.plan = plan
        # What the scripts enforce: every window lengthened by the arrival margin.
        self._enforced = _with_arrival_margin(plan, self.policy.arrival_margin_ms)
        self._clock = clock
        base = f"{key_prefix}:{{{account}}}"
        self._keys = [f"{base}:state", f"{base}:log", f"{base}:leases"]
        self._ttl_ms = max([_window_ttl_ms(w) for w in self._enforced.windows], default=_DAY_MS)
        prelude = self._lua_prelude()
        self._scripts = {
            name: redis.register_script(_script_source(name, prelude))
            for name in ("acquire", "renew", "release", "block", "settle", "sync", "status")
        }

    @property
    def keys(self) -> list[str]:
        """Every key this account owns; all share one hash tag for Redis Cluster."""
        return list(self._keys)

    def _lua_prelude(self) -> str:
        """The plan and policy as Lua literals (see lua/_lib.lua). Baked into the
        script, they cost neither argument encoding nor parsing on each call; each
        plan gets its own script SHA, which `register_script` reloads after NOSCRIPT."""
        longest = max((w.duration_ms for w in self._enforced.windows), default=0)
        tables = []
        purge_taken = False
        for w in self._enforced.windows:
            hi, lo, share = self.policy.caps(w.limit_milli)
            purge = w.duration_ms == longest and not purge_taken
            purge_taken = purge_taken or purge
            kind = "r" if w.kind == "rolling" else "g"
            regen = w.regen_milli if w.kind == "regenerating" else 0
            tables.append(
                f"{{name = '{w.name}', kind = '{kind}', dur = {w.duration_ms}, hi = {hi}, "
                f"lo = {lo}, share = {share}, limit = {w.limit_milli}, tick = {w.tick_ms or 0}, "
                f"regen = {regen}, purge = {'true' if purge else 'false'}, f = 'w:{w.name}:'}}"
            )
        return (
            f"local TTL, CAP = {self._ttl_ms}, {self.plan.concurrency or 0}\n"
            f"local WINDOWS = {{{', '.join(tables)}}}\n"
        )

    def _now_arg(self) -> bytes:
        return b"" if self._clock is None else str(int(self._clock())).encode()

    def _costs(self, cost: Cost) -> bytes:
        """Costs in plan order as "c" (every window) or "c1,c2,...", milli-units."""
        if isinstance(cost, int):
            if cost < 0:
                raise ValueError(f"cost must be >= 0 milli-units, got {cost}")
            return str(cost).encode()
        names = [w.name for w in self.plan.windows]
        unknown = set(cost) - set(names)
        if unknown:
            raise ValueError(
                f"cost names unknown windows {sorted(unknown)} of plan {self.plan.name}"
            )
        costs = [int(cost.get(n, 0)) for n in names]
        if min(costs, default=0) < 0:
            raise ValueError(f"costs must be >= 0 milli-units, got {dict(cost)}")
        return ",".join(map(str, costs)).encode() or b"0"

    def lease_id(self, request_id: str, model: str = "") -> str:
        return f"{model}|{request_id}"

    def acquire(
        self, cost: Cost, pr: str, request_id: str, lease_ms: int, *, model: str = ""
    ) -> AcquireResult:
        """Charge `cost` (milli-units; an int for every window, or per window name) to
        PR `pr` and take a concurrency lease of `lease_ms`.

        Idempotent per `request_id`: a retried acquire is never charged twice, and gets
        its slot back (renewed) while its old lease is still live.
        """
        if not pr or "|" in pr:
            raise ValueError(f"pr must be a non-empty id without '|', got {pr!r}")
        if not request_id or "|" in model:
            raise ValueError("request_id must be non-empty and model must not contain '|'")
        if lease_ms <= 0:
            raise ValueError(f"lease_ms must be positive, got {lease_ms}")
        prefix = f"{model}|" if self.plan.concurrency_per_model else ""
        lease_id = self.lease_id(request_id, model)
        args: list[_Arg] = [
            self._now_arg(),
            request_id,
            pr,
            lease_id,
            str(lease_ms),
            prefix,
            self._costs(cost),
        ]
        raw = self._scripts["acquire"](keys=self._keys, args=args).decode()
        if raw[0] == "1":
            _, replayed, now, remaining = raw.split("|", 3)
            values = remaining.split(",") if remaining else []
            return Grant(
                lease_id=lease_id,
                request_id=request_id,
                remaining={w.name: int(v) for w, v in zip(self.plan.windows, values, strict=True)},
                replayed=replayed == "1",
                now_ms=int(now),
            )
        _, reason, window, wait, now = raw.split("|")
        return Denial(
            reason=reason,
            window=window or None,
            retry_after_ms=None if int(wait) < 0 else int(wait),
            now_ms=int(now),
        )

    def renew(self, lease_id: str, lease_ms: int) -> bool:
        """Heartbeat while a call runs. False means the lease was lost (it expired), so
        the slot may already be someone else's."""
        args: list[_Arg] = [self._now_arg(), lease_id, lease_ms, self._ttl_ms]
        return int(self._scripts["renew"](keys=[self._keys[2]], args=args)) > 0

    def release(self, lease_id: str) -> bool:
        """Free the slot. False means the lease had already expired."""
        args: list[_Arg] = [self._now_arg(), lease_id]
        return int(self._scripts["release"](keys=[self._keys[2]], args=args)) == 1

    def settle(self, request_id: str, actual_cost: Cost) -> bool:
        """Replace the estimated charge with the real one. False if unknown (expired)."""
        return self._settle(request_id, self._costs(actual_cost), refund=False)

    def refund(self, request_id: str) -> bool:
        """Remove the charge of a request that never reached the provider."""
        return self._settle(request_id, b"0", refund=True)

    def _settle(self, request_id: str, costs: bytes, *, refund: bool) -> bool:
        args: list[_Arg] = [self._now_arg(), request_id, b"1" if refund else b"0", costs]
        return int(self._scripts["settle"](keys=self._keys[:2], args=args)) == 1

    def block(self, until_ms: int, reason: str) -> int:
        """Stop all grants until `until_ms` (epoch ms). Keeps the later deadline; returns
        the deadline in force afterwards (0 if `until_ms` is already past)."""
        args: list[_Arg] = [self._now_arg(), int(until_ms), reason, self._ttl_ms]
        return int(self._scripts["block"](keys=[self._keys[0]], args=args))

    def sync(self, window: str, used: int, reset_at_ms: int) -> bool:
        """Adopt the provider's `used` (milli-units) for `window` when it is more
        pessimistic than ours; the extra lasts until `reset_at_ms`. True if adopted."""
        names = [w.name for w in self.plan.windows]
        if window not in names:
            raise ValueError(f"plan {self.plan.name} has no window {window!r}; windows: {names}")
        args: list[_Arg] = [self._now_arg(), names.index(window) + 1, int(used), int(reset_at_ms)]
        return int(self._scripts["sync"](keys=self._keys[:2], args=args)) == 1

    def status(self) -> LimiterStatus:
        """A read-only snapshot; it never removes expired entries."""
        raw = self._scripts["status"](keys=self._keys, args=[self._now_arg()])
        return self._parse_status(json.loads(raw))

    def _parse_status(self, data: dict[str, Any]) -> LimiterStatus:
        windows = []
        for w, raw in zip(self.plan.windows, data.get("windows") or [], strict=True):
            nxt = int(raw["next_free_at"])
            windows.append(
                WindowStatus(
                    name=w.name,
                    kind=w.kind,
                    unit=w.unit,
                    limit=w.limit_milli,
                    spendable=self.policy.caps(w.limit_milli)[0],
                    used=int(raw["used"]),
                    next_free_at_ms=None if nxt < 0 else nxt,
                    pr_used={k: int(v) for k, v in (raw.get("pr_used") or {}).items()},
                )
            )
        leases = [LeaseStatus(x["id"], int(x["deadline"])) for x in data.get("leases") or []]
        blk = data.get("block")
        block = BlockStatus(int(blk["until"]), blk["reason"]) if blk else None
        return LimiterStatus(
            account=self.account,
            now_ms=int(data["now"]),
            concurrency=self.plan.concurrency,
            windows=windows,
            leases=leases,
            block=block,
        )
