"""The caps and the regeneration per tick, from docs/limiter.md, against hand-computed rows.

Each expected value was worked out by hand from the doc's formulas, with the decimal
numbers as written (`0.1` is one tenth): `hi = floor(L * (1 - headroom))`,
`lo = floor(L * (1 - headroom - reserve))`, `share = floor(L * pr_share)`, and
`G = round(L * tick_percent / 100)` (a half to the even neighbour, at least 1). The same
rows check the reference model's own arithmetic (`tests/limiter_model.py`), the
`Policy` and `Window` the Lua is generated from, and the literals `luagen` writes into
the scripts, so a rounding slip in any one of them fails here by name, while the
property test (`tests/test_limiter_property.py`) catches it in behaviour.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from limiter_model import caps, regen

from scheduler.quota import luagen
from scheduler.quota.plans import Plan, Policy, Window

# (limit, headroom, reserve, pr_share) -> (hi, lo, share), and why the row is here.
CAPS = [
    ((1000, 0.0, 0.0, 1.0), (1000, 1000, 1000), "the defaults: the whole limit"),
    ((1000, 0.1, 0.2, 0.5), (900, 700, 500), "round numbers"),
    ((700, 0.0, 0.3, 0.3), (700, 490, 210), "700 * (1 - 0.3) is 489.99999999999994 in binary"),
    ((999, 0.1, 0.0, 0.45), (899, 899, 449), "899.1 and 449.55 floor; half-up gives 450"),
    ((1001, 0.0, 0.0, 0.5), (1001, 1001, 500), "500.5 floors to 500; round(x + 0.5) is 501"),
    ((333, 0.25, 0.05, 0.45), (249, 233, 149), "249.75, 233.1 and 149.85 all floor"),
    ((100, 0.9, 0.05, 0.07), (10, 5, 7), "1 - 0.9 is 0.09999999999999998 in binary"),
    ((1000, 0.3333, 0.0, 1.0), (666, 666, 1000), "666.7 floors"),
    ((3, 0.3333, 0.0, 1.0), (2, 2, 3), "2.0001 floors to 2"),
    ((1, 0.5, 0.0, 0.5), (0, 0, 0), "half a milli-unit is none"),
    ((28_000_000, 0.33, 0.0, 0.33), (18_760_000, 18_760_000, 9_240_000), "a credit plan"),
    ((100_000_000, 0.29, 0.0, 0.29), (71_000_000, 71_000_000, 29_000_000), "large limits"),
]

# (limit, tick_percent) -> regen per tick, and why.
REGEN = [
    ((135_000, 5.0), 6750, "Synthetic's 5 % of 135 requests"),
    ((700, 7.5), 52, "52.5: a half goes to the even neighbour"),
    ((1500, 7.5), 112, "112.5: to the even neighbour, down"),
    ((1000, 12.5), 125, "exact"),
    ((999, 12.5), 125, "124.875 rounds up"),
    ((375, 4.4), 16, "16.5 exactly; binary floats make it 16.500000000000004"),
    ((250, 64.6), 162, "161.5 exactly (to the even 162); in binary, 161.49999999999997"),
    ((5, 10.0), 1, "0.5 rounds to 0, and a bucket regains at least 1"),
    ((1, 1.0), 1, "0.01: at least 1"),
    ((333, 33.3), 111, "110.889 rounds up"),
]


def _ids(rows: list[tuple[object, object, str]]) -> list[str]:
    return [why for _, _, why in rows]


def _lua_slots(plan: Plan, policy: Policy) -> dict[str, int]:
    """The first window's PLAN() slots as luagen writes them into every script."""
    tables = luagen.plan_lua(plan, policy, ttl_ms=60_000).tables
    body = re.search(r"local function PLAN\(\) return \{(.*)\} end", tables)
    assert body, tables
    values = body.group(1).split(", ")[: len(luagen.PLAN_SLOTS)]
    return {slot: int(v) for slot, v in zip(luagen.PLAN_SLOTS, values, strict=True) if v[0] != "'"}


def _plan(window: Window) -> Plan:
    return Plan(name="t", provider="t", windows=(window,), source="t", as_of=dt.date(2026, 1, 1))


@pytest.mark.parametrize(("args", "want", "why"), CAPS, ids=_ids(CAPS))
def test_caps(args: tuple[int, float, float, float], want: tuple[int, int, int], why: str) -> None:
    limit, headroom, reserve, pr_share = args
    assert caps(limit, headroom, reserve, pr_share) == want, "the model's own arithmetic"
    policy = Policy(headroom=headroom, reserve=reserve, pr_share=pr_share)
    assert policy.caps(limit) == want, "Policy.caps, which the Lua is generated from"
    lua = _lua_slots(_plan(Window(name="w", limit_milli=limit, duration_ms=1000)), policy)
    assert (lua["hi"], lua["lo"], lua["share"]) == want, "the literals in the scripts"


@pytest.mark.parametrize(("args", "want", "why"), REGEN, ids=_ids(REGEN))
def test_regen(args: tuple[int, float], want: int, why: str) -> None:
    limit, tick_percent = args
    assert regen(limit, tick_percent) == want, "the model's own arithmetic"
    window = Window(
        name="w",
        kind="regenerating",
        limit_milli=limit,
        duration_ms=10_000,
        tick_ms=100,
        tick_percent=tick_percent,
    )
    assert window.regen_milli == want, "Window.regen_milli, which the Lua is generated from"
    assert _lua_slots(_plan(window), Policy())["regen"] == want, "the literal in the scripts"
