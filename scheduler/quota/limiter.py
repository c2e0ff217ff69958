"""The quota limiter: the only code that touches an account's budget keys.

Every decision runs in one Lua script (see `scheduler/lua/`), so any number of worker
processes on any number of hosts share one exact view, and time comes from Redis
`TIME`, not from skewed worker clocks. The limiter knows nothing of providers, files
or RQ: it takes costs in milli-units, PR ids and request ids.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Literal, cast

import redis as redis_lib

from scheduler.quota.plans import Account, Plan, Policy, Window

__all__ = [
    "LIMITER_PREFIX",
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
# The key prefix of every account's budget keys (and circuit) in a deployment: workers,
# `serve` and the operator commands must all look under the same one.
LIMITER_PREFIX = "reviewq"
# acquire sweeps expired leases once this many leases are stored (or the cap): a
# released lease leaves at once, so only crashed or unreleased ones wait for it.
_SWEEP_AT = 32
# `sync` books the provider's own count as a charge under a request id of its own,
# "~sync:<window>:<now>:<used>" (lua/sync.lua; the numbers as Lua prints them): no
# request may take, settle or refund one. The prefix is a cheap first test.
_SYNC_ID_PREFIX = "~sync:"
_SYNC_ID = re.compile(r"~sync:[A-Za-z0-9_]+:[-+.e0-9]+:[-+.e0-9]+")
# Window names are spliced into the scripts' source and patterns (see `_plan_lua`).
_WINDOW_NAME = re.compile(r"[A-Za-z0-9_]+")


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


def _is_sync_id(request_id: str) -> bool:
    """Whether `request_id` is one `sync` may book its charges under (see _SYNC_ID)."""
    return request_id.startswith(_SYNC_ID_PREFIX) and _SYNC_ID.fullmatch(request_id) is not None


@cache
def _lua_file(name: str) -> str:
    """Lua files ship in the package (see `scheduler/lua/`)."""
    return (resources.files("scheduler.quota") / "lua" / f"{name}.lua").read_text()


def _script_source(name: str, plan_lua: _PlanLua) -> str:
    """This plan's numbers as literals, then the script, which starts with the plan's
    tables and the shared helpers (lua/_lib.lua). acquire has them, and its fast path
    generated for the plan, inserted at its own markers instead: its usual path then
    builds neither the tables nor the helpers' closures."""
    lib = "\n".join((plan_lua.tables, _lua_file("_lib")))
    if name != "acquire":
        return "\n".join((plan_lua.numbers, lib, _lua_file(name)))
    body = _lua_file(name)
    for marker, code in (("-- @FAST\n", plan_lua.fast), ("-- @LIB\n", lib)):
        if body.count(marker) != 1:
            raise RuntimeError(f"acquire.lua must hold the marker {marker.strip()!r} once")
        body = body.replace(marker, code)
    return "\n".join((plan_lua.numbers, body))


@dataclass(frozen=True, slots=True)
class _PlanLua:
    """A plan and policy as Lua (see `Limiter._plan_lua`)."""

    numbers: str
    tables: str
    fast: str


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
        self._window_names = tuple(w.name for w in plan.windows)
        self._execute: Callable[..., Any] = redis.execute_command
        self._ttl_ms = max([_window_ttl_ms(w) for w in self._enforced.windows], default=_DAY_MS)
        plan_lua = self._plan_lua()
        self._scripts = {
            name: redis.register_script(_script_source(name, plan_lua))
            for name in ("acquire", "renew", "release", "block", "settle", "sync", "status")
        }

    @property
    def keys(self) -> list[str]:
        """Every key this account owns; all share one hash tag for Redis Cluster."""
        return list(self._keys)

    def _plan_lua(self) -> _PlanLua:
        """The plan and policy as Lua literals (see lua/_lib.lua). Baked into the
        scripts, they cost neither argument encoding nor parsing on each call; each
        plan gets its own script SHAs, which `register_script` reloads after NOSCRIPT.

        The tables are built only by the functions that return them (`PLAN()`,
        `WINDOWS()`): in Redis, each table and closure built on every acquire costs,
        and acquire's usual path builds none."""
        windows = self._enforced.windows
        for w in windows:  # `Window` validates this; a plan built unvalidated must not slip by
            if not _WINDOW_NAME.fullmatch(w.name):
                raise ValueError(f"window names must match [A-Za-z0-9_]+, got {w.name!r}")
        longest = max((w.duration_ms for w in windows), default=0)
        purge = next((i for i, w in enumerate(windows, 1) if w.duration_ms == longest), 0)
        flat, tables = [], []
        gi = 3  # g is "x|bu|<window>...": the first window's v is its 3rd slot
        for i, w in enumerate(windows, 1):
            hi, lo, share = self.policy.caps(w.limit_milli)
            regen = w.regen_milli if w.kind == "regenerating" else 0
            tick = w.tick_ms or 0
            flat.append(
                f"{w.duration_ms}, {hi}, {lo}, {share}, {w.limit_milli}, {tick}, {regen}, "
                f"{gi}, '{w.name}'"
            )
            tables.append(
                f"{{name = '{w.name}', kind = '{'r' if regen == 0 else 'g'}', "
                f"dur = {w.duration_ms}, hi = {hi}, lo = {lo}, share = {share}, "
                f"limit = {w.limit_milli}, tick = {tick}, regen = {regen}, "
                f"purge = {'true' if i == purge else 'false'}, gi = {gi}}}"
            )
            gi += 3 if regen else 2
        cap = self.plan.concurrency or 0
        per_model = "true" if cap and self.plan.concurrency_per_model else "false"
        numbers = (
            f"local TTL, TTL_REFRESH = {self._ttl_ms}, {self._ttl_ms} / 4\n"
            f"local CAP, PER_MODEL, SWEEP_AT, INF = {cap}, {per_model}, {_SWEEP_AT}, math.huge\n"
            f"local NW, GN, PURGE, LONGEST = {len(windows)}, {gi - 1}, {purge}, {longest}\n"
        )
        tables_lua = (
            f"local function PLAN() return {{{', '.join(flat)}}} end\n"
            f"local function WINDOWS() return {{{', '.join(tables)}}} end\n"
        )
        return _PlanLua(numbers, tables_lua, self._fast_path())

    def _fast_path(self) -> str:
        """acquire's usual case as straight-line Lua for this plan, for acquire.lua's
        `-- @FAST` marker: it grants a new request when its slot is free (acquire has
        checked that), no block is active, no TTL refresh is due, and in every window a
        charge is already counted, none is due to be trimmed, and the cost fits under
        the caps. If any of that does not hold it leaves (`break`) before writing
        anything, and acquire's general path takes over. It writes what the general
        path writes in that case: the same fields, values and reply."""
        windows = self._enforced.windows
        nums = range(1, len(windows) + 1)
        own, costs = ", ".join(f"o{i}" for i in nums), ", ".join(f"c{i}" for i in nums)
        slots, g_in, g_out, g_args = ["x", "bu"], ["([^|]*)", "([^|]*)"], ["%s", "%s"], ["x", "bu"]
        p_in, p_out, checks, record, remaining = [], [], [], [], []
        for i, w in zip(nums, windows, strict=True):
            hi, lo, share = self.policy.caps(w.limit_milli)
            checks += [
                f"local c{i} = cost or cost_list[{i}]",
                f"if n{i} == '' or n{i} + 0 <= now - {w.duration_ms} then break end",
            ]
            if w.kind == "rolling":
                slots += [f"v{i}", f"n{i}"]
                g_in.append(f"{w.name}=([^,|]*),([^,|]*)")
                g_out.append(f"{w.name}=%d,%s")
                g_args += [f"u{i}", f"n{i}"]
                checks.append(f"local u{i} = (v{i} == '' and 0 or v{i}) + c{i}")
            else:  # the bucket brought to now, as bucket_at in lua/_lib.lua
                full, tick, regen = w.limit_milli, w.tick_ms, w.regen_milli
                slots += [f"v{i}", f"a{i}", f"n{i}"]
                g_in.append(f"{w.name}=([^,|]*),([^,|]*),([^,|]*)")
                g_out.append(f"{w.name}=%d,%d,%s")
                g_args += [f"r{i} - c{i}", f"a{i}", f"n{i}"]
                checks += [
                    f"local r{i} = v{i} == '' and {full} or v{i} + 0",
                    f"a{i} = a{i} == '' and now or a{i} + 0",
                    f"if r{i} >= {full} then",
                    f"  r{i}, a{i} = {full}, now",
                    "else",
                    f"  local k = math.floor((now - a{i}) / {tick})",
                    "  if k > 0 then",
                    f"    r{i}, a{i} = math.min({full}, r{i} + k * {regen}), a{i} + k * {tick}",
                    f"    if r{i} >= {full} then r{i}, a{i} = {full}, now end",
                    "  end",
                    "end",
                    f"local u{i} = {full} - r{i} + c{i}",
                ]
            checks += [
                f"o{i} = o{i} + c{i}",
                f"if u{i} > {hi} or (o{i} > {share} and u{i} > {lo}) then break end",
            ]
            p_in.append(f"{w.name}=([^|]*)")
            p_out.append(f"{w.name}=%d")
            record.append(w.name)
            remaining.append(f"{hi} - u{i}")
        code = [  # g and p as stored for this plan's windows, else the general path
            f"local {', '.join(slots)} = string.match(vals[2], '^{'|'.join(g_in)}$')",
            "if not x or x == '' or x + 0 < now - TTL_REFRESH then break end",
            "if bu ~= '' and bu + 0 > now then break end",
        ]
        if windows:
            code += [
                f"local {own} = {', '.join(['0'] * len(windows))}",
                "if vals[3] then",
                f"  {own} = string.match(vals[3], '^{'|'.join(p_in)}$')",
                "  if not o1 then break end",
                "end",
                *checks,
                f"if {' and '.join(f'o{i} <= 0' for i in nums)} then break end",
                # The PR id is any text but '|': joined with `..`, as fmt's '%s' stops
                # at a NUL byte. See `charge_of` in lua/_lib.lua for how it is read.
                "local record = nows .. '|' .. pr .. (cost and "
                + " .. ".join(f"'|{name}=' .. costs" for name in record),
                f"  or fmt('|{'|'.join(f'{name}=%d' for name in record)}', {costs}))",
                "redis.call('HSET', state,",
                f"  'g', fmt('{'|'.join(g_out)}', {', '.join(g_args)}),",
                f"  'p:' .. pr, fmt('{'|'.join(p_out)}', {own}),",
                "  'c:' .. rid, record)",
                "redis.call('ZADD', log, nows, rid)",
            ]
        code += [
            "redis.call('ZADD', leases, fmt('%d', now + ARGV[3]), lease)",
            "if leases_new then redis.call('PEXPIRE', leases, TTL) end",
            f"return {{{', '.join(['1, 0, now', *remaining])}}}",
        ]
        return "\n".join(["  repeat", *(f"    {line}" for line in code), "  until true", ""])

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
        if len(set(costs)) <= 1:  # one cost for every window
            return str(costs[0] if costs else 0).encode()
        return ",".join(map(str, costs)).encode()

    def lease_id(self, request_id: str, model: str = "") -> str:
        return f"{model}|{request_id}"

    def _run(self, name: str, keys: list[str], args: list[_Arg]) -> Any:
        """EVALSHA of one script, loading it again after NOSCRIPT (a restarted or
        flushed server). As `Script.__call__` does, minus its per-call overhead."""
        script, execute = self._scripts[name], self._execute
        try:
            return execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except redis_lib.exceptions.NoScriptError:
            script.sha = cast(str, self.redis.script_load(script.script))
            return execute("EVALSHA", script.sha, len(keys), *keys, *args)

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
        args: list[_Arg] = [request_id, pr, lease_ms, costs]
        if self._clock is not None:
            args += [model, self._now_arg()]
        elif model:
            args.append(model)
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
            reason=reason.decode(),
            window=window.decode() or None,
            retry_after_ms=None if wait < 0 else wait,
            now_ms=now,
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
        if _is_sync_id(request_id):
            return False  # sync's charge, not a request's: no request has this id
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
