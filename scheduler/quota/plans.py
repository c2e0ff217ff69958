"""Plans: the quota shapes providers sell, as data.

Every number in a plan is a dated preset with a named source (presets.py), never a
constant in logic: both providers changed their metering several times in 2026, so
users override any field in config and `reviewq plans` shows where each figure came
from.

Budgets are integer milli-units (`*_milli`): Synthetic weights a flash model at about
0.1 request, and Lua hands floats back to Redis truncated to integers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import math
from fractions import Fraction
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scheduler.quota.presets import PRESET_DATA
from scheduler.quota.pricing import ModelPrice, find_price
from scheduler.quota.reserve import AdaptiveReserve, reserve_milli
from scheduler.quota.timeofday import OffPeakPolicy, TimeFactors
from scheduler.quota.units import MILLI, parse_duration_ms, resolve_aliases, to_milli

__all__ = [
    "MILLI",
    "PRESETS",
    "Account",
    "AdaptiveReserve",
    "ModelCost",
    "ModelPrice",
    "OffPeakPolicy",
    "Plan",
    "Policy",
    "TimeFactors",
    "Window",
    "get_preset",
    "parse_duration_ms",
    "to_milli",
]


def _limit_milli(value: Any) -> int:
    """A window limit in units (`500`, `0.5`); `true` or a list is a typo, not 1 unit."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number of units such as 500 or 0.5, got {value!r}")
    if value <= 0:
        raise ValueError(f"a limit must be positive, got {value!r}")
    return to_milli(value)


def _decimal(x: float) -> Fraction:
    """The number as written (`0.1` is one tenth, not the binary float nearest to it):
    docs/limiter.md's cap and regeneration formulas are exact decimal arithmetic."""
    return Fraction(repr(x))


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Window(_Frozen):
    """One quota window of a plan.

    `rolling` is an exact sliding log: a charge counts until `duration_ms` after it was
    granted. `regenerating` is a bucket that gains `tick_percent` of the limit every
    `tick_ms`, capped at the limit (Synthetic's 2026 docs: 5 % every 15 minutes).
    Config may give `limit` in units and `duration`/`tick` as strings such as "5h".
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_]{1,40}$")
    limit_milli: int = Field(gt=0)
    duration_ms: int = Field(gt=0)
    kind: Literal["rolling", "regenerating"] = "rolling"
    unit: Literal["requests", "usd", "credits"] = "requests"
    tick_ms: int | None = Field(default=None, gt=0)
    tick_percent: float | None = Field(default=None, gt=0, le=100)

    @model_validator(mode="before")
    @classmethod
    def _friendly_units(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return resolve_aliases(
            data,
            (
                ("limit", "limit_milli", _limit_milli),
                ("duration", "duration_ms", parse_duration_ms),
                ("tick", "tick_ms", parse_duration_ms),
            ),
        )

    @model_validator(mode="after")
    def _regenerating_needs_tick(self) -> Window:
        if self.kind == "regenerating" and (self.tick_ms is None or self.tick_percent is None):
            raise ValueError("a regenerating window needs both 'tick' and 'tick_percent'")
        return self

    @property
    def regen_milli(self) -> int:
        """Milli-units regained per tick (regenerating windows only): rounded half to
        even, at least 1, from the exact product (in binary floats 375 * 4.4 / 100 is
        16.500000000000004, which would round up)."""
        return max(1, round(self.limit_milli * _decimal(self.tick_percent or 0) / 100))

    def scaled(self, packs: int) -> Window:
        return self.model_copy(update={"limit_milli": self.limit_milli * packs})


class ModelCost(_Frozen):
    """How much one request to matching models weighs, optionally by time of day.

    Z.AI bills GLM-5.x at 3x in its peak hours (14:00-18:00 UTC+8) and 2x off-peak;
    Synthetic scales a request by the model's input price.
    """

    pattern: str
    weight: float = Field(ge=0)
    peak_weight: float | None = Field(default=None, ge=0)
    peak_hours: tuple[int, int] = (14, 18)
    utc_offset_hours: int = 8

    def weight_at(self, when: dt.datetime) -> float:
        if self.peak_weight is None:
            return self.weight
        local = when.astimezone(dt.timezone(dt.timedelta(hours=self.utc_offset_hours)))
        start, end = self.peak_hours
        return self.peak_weight if start <= local.hour < end else self.weight


class Plan(_Frozen):
    """What one key (one pack) of a subscription allows.

    A *credit plan* has windows in `credits`: each call costs its tokens at the
    model's `prices` (per 10,000 tokens) times the `time_factors` factor at its
    arrival. `on_sale` is False for a plan new subscribers can no longer buy;
    `default_model` is what `[review] model` falls back to on this plan."""

    name: str
    provider: str
    windows: tuple[Window, ...] = ()
    concurrency: int | None = Field(default=None, ge=1)
    concurrency_per_model: bool = False
    model_costs: tuple[ModelCost, ...] = ()
    default_weight: float = Field(default=1.0, ge=0)
    prices: tuple[ModelPrice, ...] = ()
    time_factors: TimeFactors | None = None
    on_sale: bool = True
    default_model: str | None = None
    source: str
    as_of: dt.date
    notes: str = ""

    @field_validator("windows")
    @classmethod
    def _unique_window_names(cls, windows: tuple[Window, ...]) -> tuple[Window, ...]:
        names = [w.name for w in windows]
        if len(names) != len(set(names)):
            raise ValueError(f"window names must be unique, got {names}")
        return windows

    @property
    def credit_windows(self) -> tuple[Window, ...]:
        return tuple(w for w in self.windows if w.unit == "credits")

    @property
    def metering(self) -> Literal["credits", "requests"]:
        """What the provider counts: credits computed from tokens, or requests."""
        return "credits" if self.credit_windows else "requests"

    def price_for(self, model: str) -> ModelPrice | None:
        return find_price(self.prices, model)

    def time_factor(self, start: dt.datetime, end: dt.datetime | None = None) -> float:
        """The credit factor of a request arriving in [start, end] (1 without factors)."""
        if self.time_factors is None:
            return 1.0
        return self.time_factors.factor_between(start, end or start)

    def weight(self, model: str, when: dt.datetime | None = None) -> float:
        """First matching rule wins, so specific patterns go before broad ones."""
        when = when or dt.datetime.now(dt.UTC)
        for rule in self.model_costs:
            if fnmatch.fnmatchcase(model, rule.pattern):
                return rule.weight_at(when)
        return self.default_weight

    def cost_milli(self, model: str, when: dt.datetime | None = None) -> int:
        """Estimated charge of one request to `model`, before its real usage is known."""
        return to_milli(self.weight(model, when))

    def scaled(self, packs: int) -> Plan:
        """Packs stack: limits and concurrency both multiply."""
        if packs == 1:
            return self
        return self.model_copy(
            update={
                "windows": tuple(w.scaled(packs) for w in self.windows),
                "concurrency": None if self.concurrency is None else self.concurrency * packs,
            }
        )


class Policy(_Frozen):
    """How much of each window reviewq may spend, and how it is shared between PRs.

    A grant for PR p needs `used + cost <= limit * (1 - headroom)` in every window.
    Where p's own use plus cost would exceed `limit * pr_share`, it also needs
    `used + cost <= limit * (1 - headroom - reserve)`: a large PR never eats the
    reserve, yet a lone large PR still uses the idle budget outside it.

    With `adaptive`, the reserve in force follows demand between its floor and
    ceiling (docs/reserve.md); `reserve` is then the one in force until the waker has
    first sized it.
    """

    headroom: float = Field(default=0.0, ge=0, lt=1)
    pr_share: float = Field(default=1.0, gt=0, le=1)
    reserve: float = Field(default=0.0, ge=0, lt=1)
    # A provider starts counting a request when it arrives, a network trip after the
    # grant, so a charge keeps counting this long past its window: else a request
    # granted as a charge leaves the window meets a 429 (seen against the simulator).
    arrival_margin_ms: int = Field(default=1000, ge=0, le=3_600_000)
    adaptive: AdaptiveReserve | None = None

    @model_validator(mode="after")
    def _fits(self) -> Policy:
        top = max(self.reserve, self.reserve_ceiling)
        if self.headroom + top >= 1:
            raise ValueError(
                f"headroom ({self.headroom}) + reserve ({top}) must stay below 1, "
                "or no PR over its share could ever be served"
            )
        return self

    @property
    def reserve_ceiling(self) -> float:
        """The most the adaptive reserve may hold: its ceiling, else `reserve`."""
        if self.adaptive is None or self.adaptive.ceiling is None:
            return self.reserve
        return self.adaptive.ceiling

    def reserve_bounds(self, limit_milli: int) -> tuple[int, int]:
        """(floor, ceiling) of the adaptive reserve in milli-units of one window."""
        floor = self.adaptive.floor if self.adaptive is not None else self.reserve
        return (
            reserve_milli(limit_milli, self.headroom, floor),
            reserve_milli(limit_milli, self.headroom, self.reserve_ceiling),
        )

    def caps(self, limit_milli: int) -> tuple[int, int, int]:
        """(spendable, spendable outside the reserve, one PR's share) in milli-units.

        Floors, so rounding never lets reviewq overspend by a milli-unit; of the exact
        products, as binary floats are a milli-unit short from about 26,000 units up
        (28,000,000 * (1 - 0.33) is 18759999.999999996).
        """
        headroom, reserve = _decimal(self.headroom), _decimal(self.reserve)
        hi = math.floor(limit_milli * (1 - headroom))
        lo = math.floor(limit_milli * (1 - headroom - reserve))
        share = math.floor(limit_milli * _decimal(self.pr_share))
        return hi, lo, share


class Account(_Frozen):
    """One API key on one plan. The key itself never lives here, only its env var."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    provider: str
    base_url: str
    api_key_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    plan: Plan
    packs: int = Field(default=1, ge=1, le=100)
    policy: Policy = Policy()
    # Moving large reviews to off-peak hours (credit plans with time factors only).
    offpeak: OffPeakPolicy | None = None
    # How often a busy deployment polls the provider's quota endpoint (None: the
    # provider's default, see `workers.providers.quota`).
    quota_poll_ms: int | None = Field(default=None, gt=0)

    @property
    def effective_plan(self) -> Plan:
        return self.plan.scaled(self.packs)


# The dated presets (presets.py), validated as any user's plan is.
PRESETS: dict[str, Plan] = {
    plan.name: plan for plan in (Plan.model_validate(data) for data in PRESET_DATA)
}


def get_preset(name: str) -> Plan:
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise KeyError(f"unknown plan {name!r}; known presets: {known}") from None
