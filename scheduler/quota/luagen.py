"""A plan and policy as Lua: the only code in the quota room that writes Lua text.

In Redis, every argument a script parses and every table or closure it builds costs on
each call, so a plan's numbers are baked into its scripts as literals (each plan gets
its own script SHAs), and acquire's usual case is generated as straight-line code for
the plan's windows. Window names are the only names spliced into the source; ids are
always arguments (see lua/_lib.lua).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from scheduler.quota.plans import Plan, Policy, Window

__all__ = [
    "PLAN_SLOTS",
    "SCRIPTS",
    "SWEEP_AT",
    "PlanLua",
    "fast_path",
    "plan_lua",
    "script_sources",
]

SCRIPTS = ("acquire", "renew", "release", "block", "settle", "sync", "status", "reserve", "leaving")
# acquire sweeps expired leases once this many leases are stored (or the cap): a
# released lease leaves at once, so only crashed or unreleased ones wait for it.
SWEEP_AT = 32
# One window's slots in PLAN(), in order. The scripts read them by name, through the
# locals P_DUR, P_HI, ... and P_SLOTS (their number) generated alongside the table.
PLAN_SLOTS = ("dur", "hi", "lo", "share", "limit", "tick", "regen", "gi", "name")
# Window names are spliced into the scripts' source and patterns.
_WINDOW_NAME = re.compile(r"[A-Za-z0-9_]+")
_MARKERS = ("-- @FAST\n", "-- @LIB\n")


@dataclass(frozen=True, slots=True)
class PlanLua:
    """One plan and policy as Lua, in three parts because acquire places them apart:
    `numbers` (scalar literals) open every script, while `tables` (PLAN(), WINDOWS()
    and the slot names) and the helpers come after acquire's `fast` path, which needs
    none of them."""

    numbers: str
    tables: str
    fast: str


@cache
def _lua_file(name: str) -> str:
    """Lua files ship in the package, so an installed reviewq finds its scripts."""
    return (resources.files("scheduler.quota") / "lua" / f"{name}.lua").read_text()


def script_sources(plan: Plan, policy: Policy, ttl_ms: int) -> dict[str, str]:
    """Every script's full source for `plan` as enforced (windows already lengthened by
    the arrival margin), by name."""
    lua = plan_lua(plan, policy, ttl_ms)
    return {name: _script_source(name, lua) for name in SCRIPTS}


def _script_source(name: str, lua: PlanLua) -> str:
    """The plan's numbers, `bucket_at`, then the script, which starts with the plan's
    tables and the shared helpers (lua/_lib.lua). acquire has them, and its fast path,
    inserted at its own markers instead: its usual path then builds neither the tables
    nor the helpers' closures."""
    head = "\n".join((lua.numbers, _lua_file("bucket")))
    lib = "\n".join((lua.tables, _lua_file("_lib")))
    if name != "acquire":
        return "\n".join((head, lib, _lua_file(name)))
    body = _lua_file(name)
    for marker, code in zip(_MARKERS, (lua.fast, lib), strict=True):
        if body.count(marker) != 1:
            raise RuntimeError(f"acquire.lua must hold the marker {marker.strip()!r} once")
        body = body.replace(marker, code)
    return "\n".join((head, body))


def plan_lua(plan: Plan, policy: Policy, ttl_ms: int) -> PlanLua:
    """The plan and policy as Lua literals (see lua/_lib.lua for what each name means).

    The tables are built only by the functions that return them (`PLAN()`,
    `WINDOWS()`): in Redis, each table and closure built on every acquire costs, and
    acquire's usual path builds none."""
    windows = plan.windows
    for w in windows:  # `Window` validates this; a plan built unvalidated must not slip by
        if not _WINDOW_NAME.fullmatch(w.name):
            raise ValueError(f"window names must match [A-Za-z0-9_]+, got {w.name!r}")
    longest = max((w.duration_ms for w in windows), default=0)
    purge = next((i for i, w in enumerate(windows, 1) if w.duration_ms == longest), 0)
    rows = _plan_rows(windows, policy)
    flat = ", ".join(", ".join(str(row[slot]) for slot in PLAN_SLOTS) for row in rows)
    tables = ", ".join(_window_table(row, i == purge) for i, row in enumerate(rows, 1))
    slot_names = ", ".join(f"P_{slot.upper()}" for slot in PLAN_SLOTS)
    slot_numbers = ", ".join(str(n) for n in range(1, len(PLAN_SLOTS) + 1))
    cap = plan.concurrency or 0
    per_model = "true" if cap and plan.concurrency_per_model else "false"
    slots_in_g = 2 + sum(3 if row["regen"] else 2 for row in rows)
    numbers = (
        f"local TTL, TTL_REFRESH = {ttl_ms}, {ttl_ms} / 4\n"
        f"local CAP, PER_MODEL, SWEEP_AT, INF = {cap}, {per_model}, {SWEEP_AT}, math.huge\n"
        f"local NW, GN, PURGE, LONGEST = {len(windows)}, {slots_in_g}, {purge}, {longest}\n"
    )
    tables_lua = (
        f"local {slot_names}, P_SLOTS = {slot_numbers}, {len(PLAN_SLOTS)}\n"
        f"local function PLAN() return {{{flat}}} end\n"
        f"local function WINDOWS() return {{{tables}}} end\n"
    )
    return PlanLua(numbers, tables_lua, fast_path(windows, policy))


def _plan_rows(windows: Sequence[Window], policy: Policy) -> list[dict[str, int | str]]:
    """Each window's PLAN_SLOTS as Lua literals. `gi` is where its slots start in g,
    "x|bu|<window>...": the first window's v is g's 3rd slot."""
    rows: list[dict[str, int | str]] = []
    gi = 3
    for w in windows:
        hi, lo, share = policy.caps(w.limit_milli)
        regen = w.regen_milli if w.kind == "regenerating" else 0
        rows.append(
            {
                "dur": w.duration_ms,
                "hi": hi,
                "lo": lo,
                "share": share,
                "limit": w.limit_milli,
                "tick": w.tick_ms or 0,
                "regen": regen,
                "gi": gi,
                "name": f"'{w.name}'",
            }
        )
        gi += 3 if regen else 2
    return rows


def _window_table(row: dict[str, int | str], purge: bool) -> str:
    """One window as WINDOWS() gives it: its PLAN() slots by name, plus `kind` ('r'
    rolling, 'g' regenerating) and whether its expiry forgets charge records."""
    fields = [f"{slot} = {row[slot]}" for slot in PLAN_SLOTS]
    fields += [f"kind = '{'g' if row['regen'] else 'r'}'", f"purge = {str(purge).lower()}"]
    return "{" + ", ".join(fields) + "}"


@dataclass(slots=True)
class _Fast:
    """The pieces of the fast path, filled window by window (see `fast_path`): g's
    slots as locals, its pattern in and format out, the format's arguments, the PR use
    pattern and format, the checks, and each window's remaining budget."""

    g_slots: list[str] = field(default_factory=lambda: ["x", "bu"])
    g_in: list[str] = field(default_factory=lambda: ["([^|]*)", "([^|]*)"])
    g_out: list[str] = field(default_factory=lambda: ["%s", "%s"])
    g_args: list[str] = field(default_factory=lambda: ["x", "bu"])
    p_in: list[str] = field(default_factory=list)
    p_out: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)
    r_in: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    los: list[str] = field(default_factory=list)

    def add(self, i: int, w: Window, policy: Policy) -> None:
        """Window `i`: read its slots, bring it to now, and leave unless the cost fits
        under its caps without anything to trim; `u{i}` is its use after the charge, and
        `l{i}` its line for a PR over its share (the reserve in force, see `_lines`)."""
        hi, lo, share = policy.caps(w.limit_milli)
        self.r_in.append(f"{w.name}=(%d+)")
        self.los.append(str(lo))
        self.lines.append(f"math.max(0, {hi} - m{i})")
        self.checks += [
            f"local c{i} = cost or cost_list[{i}]",
            f"if n{i} == '' or n{i} + 0 <= now - {w.duration_ms} then break end",
        ]
        if w.kind == "rolling":
            self.g_slots += [f"v{i}", f"n{i}"]
            self.g_in.append(f"{w.name}=([^,|]*),([^,|]*)")
            self.g_out.append(f"{w.name}=%d,%s")
            self.g_args += [f"u{i}", f"n{i}"]
            self.checks.append(f"local u{i} = (v{i} == '' and 0 or v{i}) + c{i}")
        else:
            full, tick, regen = w.limit_milli, w.tick_ms, w.regen_milli
            self.g_slots += [f"v{i}", f"a{i}", f"n{i}"]
            self.g_in.append(f"{w.name}=([^,|]*),([^,|]*),([^,|]*)")
            self.g_out.append(f"{w.name}=%d,%d,%s")
            self.g_args += [f"r{i} - c{i}", f"b{i}", f"n{i}"]
            self.checks += [
                f"local r{i}, b{i} = bucket_at(v{i}, a{i}, now, {full}, {tick}, {regen})",
                f"local u{i} = {full} - r{i} + c{i}",
            ]
        self.checks += [
            f"o{i} = o{i} + c{i}",
            f"if u{i} > {hi} or ((large or o{i} > {share}) and u{i} > l{i}) then break end",
        ]
        self.p_in.append(f"{w.name}=([^|]*)")
        self.p_out.append(f"{w.name}=%d")
        self.remaining.append(f"{hi} - u{i}")


def fast_path(windows: Sequence[Window], policy: Policy) -> str:
    """acquire's usual case as straight-line Lua for these windows, for acquire.lua's
    `-- @FAST` marker: it grants a new request when its slot is free (acquire has
    checked that), no block is active, no TTL refresh is due, and in every window a
    charge is already counted, none is due to be trimmed, and the cost fits under the
    caps. If any of that does not hold it leaves (`break`) before writing anything, and
    acquire's general path takes over. It writes what the general path writes in that
    case: the same fields, values and reply."""
    fast = _Fast()
    for i, w in enumerate(windows, 1):
        fast.add(i, w, policy)
    code = [  # g and p as stored for this plan's windows, else the general path
        f"local {', '.join(fast.g_slots)} = string.match(vals[2], '^{'|'.join(fast.g_in)}$')",
        "if not x or x == '' or x + 0 < now - TTL_REFRESH then break end",
        "if bu ~= '' and bu + 0 > now then break end",
    ]
    if windows:
        code += _fast_charge(fast, [w.name for w in windows])
    code += [
        "redis.call('ZADD', leases, fmt('%d', now + lease_ms), lease)",
        "if leases_new then redis.call('PEXPIRE', leases, TTL) end",
        f"return {{{', '.join(['1, 0, now', *fast.remaining])}}}",
    ]
    return "\n".join(["  repeat", *(f"    {line}" for line in code), "  until true", ""])


def _fast_charge(fast: _Fast, names: Sequence[str]) -> list[str]:
    """The fast path's checks, then the charge written: g, the PR's use, the record."""
    nums = range(1, len(names) + 1)
    own, costs = ", ".join(f"o{i}" for i in nums), ", ".join(f"c{i}" for i in nums)
    return [
        *_lines(fast, nums),
        f"local {own} = {', '.join(['0'] * len(names))}",
        "if vals[3] then",
        f"  {own} = string.match(vals[3], '^{'|'.join(fast.p_in)}$')",
        "  if not o1 then break end",
        "end",
        *fast.checks,
        f"if {' and '.join(f'o{i} <= 0' for i in nums)} then break end",
        # The PR id is any text but '|': joined with `..`, as fmt's '%s' stops at a NUL
        # byte. See `charge_of` in lua/_lib.lua for how it is read.
        "local record = nows .. '|' .. pr .. (cost and "
        + " .. ".join(f"'|{name}=' .. costs" for name in names),
        f"  or fmt('|{'|'.join(f'{name}=%d' for name in names)}', {costs}))",
        "redis.call('HSET', state,",
        f"  'g', fmt('{'|'.join(fast.g_out)}', {', '.join(fast.g_args)}),",
        f"  'p:' .. pr, fmt('{'|'.join(fast.p_out)}', {own}),",
        "  'c:' .. rid, record)",
        "redis.call('ZADD', log, nows, rid)",
    ]


def _lines(fast: _Fast, nums: range) -> list[str]:
    """Each window's line for a PR over its share, `l{i}`: the plan's, or hi minus the
    reserve in force when the waker has set one (rv, in its stored form only; any other
    form goes to the general path, which reads it by window name)."""
    ls, ms = ", ".join(f"l{i}" for i in nums), ", ".join(f"m{i}" for i in nums)
    return [
        f"local {ls} = {', '.join(fast.los)}",
        "if vals[4] then",
        f"  local {ms} = string.match(vals[4], '^{'|'.join(fast.r_in)}$')",
        "  if not m1 then break end",
        f"  {ls} = {', '.join(fast.lines)}",
        "end",
    ]
