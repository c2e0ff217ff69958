"""The quota limiter: the only code that touches an account's budget keys.

Every decision runs in one Lua script (see `scheduler/quota/lua/`, and `luagen` for
the plan's part of each), so any number of worker processes on any number of hosts
share one exact view, and time comes from Redis `TIME`, not from skewed worker clocks.
The limiter knows nothing of providers, files or RQ: it takes costs in milli-units, PR
ids and request ids.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, cast

import redis as redis_lib

from scheduler.quota import luagen
from scheduler.quota.plans import Account, Plan, Policy, Window
from scheduler.quota.reserve import is_large
from scheduler.quota.results import (
    AcquireResult,
    BlockStatus,
    Denial,
    DenialReason,
    Grant,
    LeaseStatus,
    LimiterStatus,
    WindowStatus,
)

__all__ = [
    "LIMITER_PREFIX",
    "AcquireResult",
    "BlockStatus",
    "Denial",
    "DenialReason",
    "Grant",
    "LeaseStatus",
    "Limiter",
    "LimiterStatus",
    "WindowStatus",
]

Cost = int | Mapping[str, int]
_Arg = bytes | str | int
_DAY_MS = 86_400_000
# The key prefix of every account's budget keys (and circuit) in a deployment: workers,
# `serve` and the operator commands must all look under the same one.
LIMITER_PREFIX = "reviewq"
# `sync` books the provider's own count as a charge under a request id of its own,
# "~sync:<window>:<now>:<used>" (lua/sync.lua; the numbers as Lua prints them): no
# request may take, settle or refund one. The prefix is a cheap first test.
_SYNC_ID_PREFIX = "~sync:"
_SYNC_ID = re.compile(r"~sync:[A-Za-z0-9_]+:[-+.e0-9]+:[-+.e0-9]+")
# acquire's denial reasons as the script replies them: a dict lookup, cheaper than
# the enum's own lookup by value.
_REASONS = {reason.value.encode(): reason for reason in DenialReason}


def _is_sync_id(request_id: str) -> bool:
    """Whether `request_id` is one `sync` may book its charges under (see _SYNC_ID)."""
    return request_id.startswith(_SYNC_ID_PREFIX) and _SYNC_ID.fullmatch(request_id) is not None


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
        key_prefix: str = LIMITER_PREFIX,
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
        # The adaptive reserve's history (lua/reserve.lua); not in `keys`, which lists
        # the budget keys every script shares.
        self.reserve_key = f"{base}:reserve"
        self._window_names = tuple(w.name for w in plan.windows)
        self._execute: Callable[..., Any] = redis.execute_command
        self._ttl_ms = max([_window_ttl_ms(w) for w in self._enforced.windows], default=_DAY_MS)
        sources = luagen.script_sources(self._enforced, self.policy, self._ttl_ms)
        self._scripts = {name: redis.register_script(src) for name, src in sources.items()}

    @property
    def keys(self) -> list[str]:
        """Every key this account owns; all share one hash tag for Redis Cluster."""
        return list(self._keys)

    def _now_arg(self) -> bytes:
        """Every script's ARGV[1]: '' lets the script read Redis `TIME`."""
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
        if len(set(costs)) <= 1:  # one cost for every window
            return str(costs[0] if costs else 0).encode()
        return ",".join(map(str, costs)).encode()

    def lease_id(self, request_id: str, model: str = "") -> str:
        return f"{model}|{request_id}"

    def _run(self, name: str, keys: list[str], args: list[_Arg]) -> Any:
        """Every script call: EVALSHA, loading the script again after NOSCRIPT (a
        restarted or flushed server, a newly promoted replica). As `Script.__call__`
        does, minus its per-call overhead, which acquire would pay on every grant."""
        script, execute = self._scripts[name], self._execute
        try:
            return execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except redis_lib.exceptions.NoScriptError:
            script.sha = cast(str, self.redis.script_load(script.script))
            return execute("EVALSHA", script.sha, len(keys), *keys, *args)

    def acquire(
        self,
        cost: Cost,
        pr: str,
        request_id: str,
        lease_ms: int,
        *,
        model: str = "",
        large: bool = False,
    ) -> AcquireResult:
        """Charge `cost` (milli-units; an int for every window, or per window name) to
        PR `pr` and take a concurrency lease of `lease_ms`. A `large` PR (one whose
        estimate exceeds its share, see `scheduler.quota.reserve.is_large`)
        counts as over its share from its first request, so it never spends the
        reserve.

        Idempotent per `request_id`: a retried acquire is never charged twice, and gets
        its slot back (renewed) while its old lease is still live.
        """
        if not pr or "|" in pr:
            raise ValueError(f"pr must be a non-empty id without '|', got {pr!r}")
        if (
            not request_id
            or "|" in model
            or (request_id.startswith(_SYNC_ID_PREFIX) and _is_sync_id(request_id))
        ):
            raise ValueError(
                "request_id must be non-empty and not of the form "
                "'~sync:<window>:<n>:<n>' (reserved for sync), and model must not "
                f"contain '|'; got {request_id!r}, {model!r}"
            )
        if lease_ms <= 0:
            raise ValueError(f"lease_ms must be positive, got {lease_ms}")
        lease_id = self.lease_id(request_id, model)
        costs = str(cost) if type(cost) is int and cost >= 0 else self._costs(cost)
        args: list[_Arg] = [self._now_arg(), request_id, pr, lease_ms, costs]
        if model or large:
            args.append(model)
        if large:
            args.append("1")
        reply = self._run("acquire", self._keys, args)
        if reply[0] == 1:
            return Grant(
                lease_id=lease_id,
                request_id=request_id,
                remaining=dict(zip(self._window_names, reply[3:], strict=True)),
                replayed=reply[1] == 1,
                now_ms=reply[2],
            )
        _, reason, window, wait, now = reply
        return Denial(
            reason=_REASONS[reason],
            window=window.decode() or None,
            retry_after_ms=None if wait < 0 else wait,
            now_ms=now,
        )

    def renew(self, lease_id: str, lease_ms: int) -> bool:
        """Heartbeat while a call runs. False means the lease was lost (it expired), so
        the slot may already be someone else's."""
        args: list[_Arg] = [self._now_arg(), lease_id, lease_ms, self._ttl_ms]
        return int(self._run("renew", [self._keys[2]], args)) > 0

    def release(self, lease_id: str) -> bool:
        """Free the slot. False means the lease had already expired."""
        return self.release_at(lease_id)[0]

    def release_at(self, lease_id: str) -> tuple[bool, int]:
        """`release`, and the limiter's time of it: the trace's hand-off gap is measured
        from the moment the slot was free, not from a clock read after."""
        args: list[_Arg] = [self._now_arg(), lease_id]
        live, now = cast(list[int], self._run("release", [self._keys[2]], args))
        return int(live) == 1, int(now)

    def settle(self, request_id: str, actual_cost: Cost) -> bool:
        """Replace the estimated charge with the real one. False if unknown (expired)."""
        return self._settle(request_id, self._costs(actual_cost), refund=False)

    def refund(self, request_id: str) -> bool:
        """Remove the charge of a request that never reached the provider."""
        return self._settle(request_id, b"0", refund=True)

    def _settle(self, request_id: str, costs: bytes, *, refund: bool) -> bool:
        if _is_sync_id(request_id):
            return False  # sync's charge, not a request's: no request has this id
        args: list[_Arg] = [self._now_arg(), request_id, b"1" if refund else b"0", costs]
        return int(self._run("settle", self._keys[:2], args)) == 1

    def block(self, until_ms: int, reason: str) -> int:
        """Stop all grants until `until_ms` (epoch ms). Keeps the later deadline; returns
        the deadline in force afterwards (0 if `until_ms` is already past)."""
        args: list[_Arg] = [self._now_arg(), int(until_ms), reason, self._ttl_ms]
        return int(self._run("block", [self._keys[0]], args))

    def sync(self, window: str, used: int, reset_at_ms: int) -> bool:
        """Adopt the provider's `used` (milli-units) for `window` when it is more
        pessimistic than ours; the extra lasts until `reset_at_ms`. True if adopted."""
        names = [w.name for w in self.plan.windows]
        if window not in names:
            raise ValueError(f"plan {self.plan.name} has no window {window!r}; windows: {names}")
        args: list[_Arg] = [self._now_arg(), names.index(window) + 1, int(used), int(reset_at_ms)]
        return int(self._run("sync", self._keys[:2], args)) == 1

    def set_reserve(self, reserve: Mapping[str, int], demand: str = "", keep: int = 0) -> int:
        """Put `reserve` (milli-units per window name; a window left out gets 0) in force
        from the next acquire on: PRs over their share then stop at spendable minus it.
        `demand` is kept for `inspect`; `keep` changes are kept in the history at
        `reserve_key`. Returns the time it took effect (the limiter's ms)."""
        names = [w.name for w in self.plan.windows]
        unknown = set(reserve) - set(names)
        if unknown:
            raise ValueError(f"plan {self.plan.name} has no windows {sorted(unknown)}")
        amounts = [int(reserve.get(n, 0)) for n in names]
        if min(amounts, default=0) < 0:
            raise ValueError(f"a reserve must be >= 0 milli-units, got {dict(reserve)}")
        if not names:
            return 0
        args: list[_Arg] = [self._now_arg(), ",".join(map(str, amounts)), demand, keep]
        return int(self._run("reserve", [self._keys[0], self.reserve_key], args)[0])

    def leaving(
        self, by_ms: Mapping[str, int], keep_ms: int = 0, *, now_ms: int | None = None
    ) -> dict[str, int]:
        """Per window (milli-units), the use counted now and still at `keep_ms` from now
        that leaves the window by `by_ms[window]` (a window left out: none): room lent
        now that is back by then (lua/leaving.lua, docs/reserve.md). `now_ms`: the
        caller's now, so its times and the script's agree (default: the limiter's)."""
        names = self._window_names
        if not names:
            return {}
        times = ",".join(str(int(by_ms.get(n, 0))) for n in names)
        now = self._now_arg() if now_ms is None else str(int(now_ms)).encode()
        args: list[_Arg] = [now, times, int(keep_ms)]
        raw = self._run("leaving", self._keys[:2], args)
        return {n: int(v) for n, v in zip(names, raw[1:], strict=True)}

    def reserve_history(self) -> list[tuple[int, dict[str, int]]]:
        """The kept changes of the reserve in force, oldest first: (ms, per window)."""
        raw = cast(list[bytes], self.redis.lrange(self.reserve_key, 0, -1))
        out = []
        for item in raw:
            at, _, rv = item.decode().partition("|")
            out.append((int(at), _parse_rv(rv)))
        return out

    def is_large(self, estimate: Mapping[str, int]) -> bool:
        """Whether a PR of `estimate` (milli-units per window) goes to `acquire` as
        `large`: only under an adaptive reserve, which is sized for small PRs alone. A
        fixed reserve keeps its rule: a PR spends it while under its share."""
        if self.policy.adaptive is None:
            return False
        return is_large(estimate, self._shares)

    @functools.cached_property
    def _shares(self) -> dict[str, int]:
        """One PR's share per window: asked on every acquire of an adaptive account
        (`choose`), fixed for the limiter's life, so computed once."""
        return {w.name: self.policy.caps(w.limit_milli)[2] for w in self.plan.windows}

    def pr_use(self, prs: list[str]) -> dict[str, dict[str, int]]:
        """Each PR's use per window as the limiter last booked it (milli-units; it may
        still count charges that left a window since: they leave at the next acquire)."""
        if not prs:
            return {}
        raw = cast(list[bytes | None], self.redis.hmget(self._keys[0], [f"p:{p}" for p in prs]))
        return {pr: _parse_rv(value.decode()) for pr, value in zip(prs, raw, strict=True) if value}

    def status(self) -> LimiterStatus:
        """A read-only snapshot; it never removes expired entries."""
        raw = self._run("status", self._keys, [self._now_arg()])
        return self._parse_status(json.loads(raw))

    def _parse_status(self, data: dict[str, Any]) -> LimiterStatus:
        windows = []
        rv = data.get("reserve")
        in_force = _parse_rv(rv) if isinstance(rv, str) else {}
        for w, raw in zip(self.plan.windows, data.get("windows") or [], strict=True):
            nxt = int(raw["next_free_at"])
            hi, lo, _ = self.policy.caps(w.limit_milli)
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
                    reserve=in_force.get(w.name, hi - lo),
                    reserve_adaptive=w.name in in_force,
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
            reserve_demand=_parse_demand(data.get("demand")),
        )


def _parse_rv(text: str) -> dict[str, int]:
    """A packed "<w>=n|<w>=n" field (the reserve in force, a PR's use) by window."""
    out = {}
    for part in text.split("|"):
        name, sep, value = part.partition("=")
        if sep and value.lstrip("-").isdigit():
            out[name] = int(value)
    return out


def _parse_demand(raw: Any) -> dict[str, Any] | None:
    """The adaptive reserve's estimate as the waker stored it (JSON), if readable."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
