"""A `reviewq simulate` scenario: accounts, traffic and time compression, from YAML/JSON.

Durations are simulated seconds or strings (`90s`, `15m`, `5h`, `7d`). Plans are preset
names or inline `{windows: [...], concurrency}` tables, as in the TOML config.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from scheduler.quota.plans import OffPeakPolicy, Plan, Policy, get_preset, parse_duration_ms
from scheduler.sandbox import Flavour

__all__ = ["AccountSpec", "PrSpec", "PushSpec", "Scenario", "load_scenario"]


def _seconds(value: Any) -> float:
    return parse_duration_ms(value) / 1000


def _seconds_or_zero(value: Any) -> float:
    return 0.0 if value in (0, 0.0, "0") else _seconds(value)


Seconds = Annotated[float, BeforeValidator(_seconds)]
Offset = Annotated[float, BeforeValidator(_seconds_or_zero)]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _plan(value: Any, where: str) -> Plan:
    if isinstance(value, Plan):
        return value
    if isinstance(value, str):
        try:
            return get_preset(value)
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from None
    if isinstance(value, dict):
        defaults = {
            "name": f"inline-{where}",
            "provider": "synthetic",
            "source": "scenario file (inline plan)",
            "as_of": dt.date.today().isoformat(),
        }
        return Plan.model_validate({**defaults, **value})
    raise ValueError("expected a preset name or an inline {windows, concurrency} table")


class AccountSpec(_Spec):
    """One simulated key. `provider_quota` is what the simulator really enforces when
    it differs from the plan (a key shared with someone else)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    plan: Plan
    provider_quota: Plan | None = None
    policy: Policy | None = None
    fallback_for: str | None = None
    packs: int = Field(default=1, ge=1, le=100)
    flavour: Flavour | None = None
    # Off-peak scheduling for this account (`reviewq simulate --no-offpeak` drops it).
    offpeak: OffPeakPolicy | None = None
    # The simulator answers `/v2/quotas` with `{}`, as Synthetic does to API keys now.
    quota_endpoint_empty: bool = False

    @model_validator(mode="before")
    @classmethod
    def _plans(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            name = str(data.get("name", "account"))
            if "plan" in data:
                data["plan"] = _plan(data["plan"], name)
            if data.get("provider_quota") is not None:
                data["provider_quota"] = _plan(data["provider_quota"], f"{name}-quota")
        return data

    @property
    def api_flavour(self) -> Flavour:
        if self.flavour is not None:
            return self.flavour
        return "zai" if self.plan.name.startswith("zai") else "synthetic"


class PushSpec(_Spec):
    """A push to a PR, `at` after it opened: `files` of its files get new content (the
    ones no earlier push touched first), `add` new files appear. `force`: the history
    is rewritten (a squash or rebase), the content otherwise as a plain push leaves it.
    See `scheduler.sim.pushes`."""

    at: Offset
    files: int = Field(default=1, ge=0, le=3000)
    add: int = Field(default=0, ge=0, le=3000)
    force: bool = False


class PrSpec(_Spec):
    id: str = Field(pattern=r"^[^|\s]{1,200}$")
    at: Offset = 0.0
    files: int = Field(ge=1, le=3000)
    lines_per_file: int = Field(default=40, ge=1, le=20_000)
    pushes: tuple[PushSpec, ...] = Field(default=(), max_length=100)


class GeneratorSpec(_Spec):
    """`count` PRs named `<prefix>#<n>`, one every `every` from `start`."""

    prefix: str = Field(pattern=r"^[^|\s#]{1,150}$")
    count: int = Field(ge=1, le=10_000)
    files: int = Field(ge=1, le=3000)
    lines_per_file: int = Field(default=40, ge=1, le=20_000)
    start: Offset = 0.0
    every: Seconds = 900.0

    def prs(self) -> list[PrSpec]:
        return [
            PrSpec(
                id=f"{self.prefix}#{n + 1}",
                at=self.start + n * self.every,
                files=self.files,
                lines_per_file=self.lines_per_file,
            )
            for n in range(self.count)
        ]


class LatencySpec(_Spec):
    median: Seconds = 20.0
    p95: Seconds = 60.0


class FaultSpec(_Spec):
    error_rate: float = Field(default=0.0, ge=0, le=1)
    timeout_rate: float = Field(default=0.0, ge=0, le=1)
    # The workers' read timeout, which a timeout fault outlasts: simulated seconds,
    # scaled like every duration (see `accounts.client_timeout_s`).
    client_timeout: Seconds = 300.0


class Scenario(_Spec):
    time_scale: float = Field(default=300.0, gt=0, le=100_000)
    duration: Seconds
    workers: int = Field(default=4, ge=1, le=64)
    policy: Literal["fair", "fifo"] = "fair"
    per_pr_inflight: int = Field(default=2, ge=1, le=1000)
    accounts: tuple[AccountSpec, ...] = Field(min_length=1)
    latency: LatencySpec = LatencySpec()
    faults: FaultSpec = FaultSpec()
    prs: tuple[PrSpec, ...] = ()
    generators: tuple[GeneratorSpec, ...] = ()
    max_message_tokens: int = Field(default=4000, ge=500)
    line_chars: int = Field(default=40, ge=8, le=400)
    # `mixed`: each file's lines follow one of a few code styles (symbols, prose,
    # identifiers), so prompts of equal length differ in tokens as real code does.
    diff_style: Literal["uniform", "mixed"] = "uniform"
    # The simulated calendar at the start (e.g. 2026-12-08T05:00:00Z), so a run can
    # cross a peak boundary; default: the wall clock when the run starts.
    start_at: dt.datetime | None = None
    # What reviews ask for: the model (default: the main account's plan's, else its
    # flavour's first), `max_tokens`, and reasoning (as `[review] thinking`).
    model: str | None = None
    max_tokens: int = Field(default=2048, ge=64, le=200_000)
    thinking: Literal["auto", "disabled", "enabled", "provider"] = "auto"
    thinking_budget: int | None = Field(default=None, ge=64, le=200_000)
    # The most Redis keeps what a finished PR leaves: its state, RQ's results and
    # failed jobs, the log sink's reviews (scaled like every duration).
    retention: Seconds = 7 * 86_400.0
    seed: int = 1
    # `[planning] incremental`: a push reviews only the files changed since the last
    # review (False: every push pays for a whole review, as before issue 16).
    incremental: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        names = [a.name for a in self.accounts]
        if len(set(names)) != len(names):
            raise ValueError(f"account names must be unique, got {names}")
        for account in self.accounts:
            if account.fallback_for is not None and account.fallback_for not in names:
                raise ValueError(
                    f"{account.name}: fallback_for names no account: {account.fallback_for!r}"
                )
        ids = [p.id for p in self.all_prs()]
        if len(set(ids)) != len(ids):
            raise ValueError("PR ids must be unique across prs and generators")
        if not ids:
            raise ValueError("a scenario needs at least one PR (prs or generators)")
        if self.start_at is not None and self.start_at.tzinfo is None:
            raise ValueError("start_at needs a time zone, e.g. 2026-12-08T05:00:00Z")
        return self

    def all_prs(self) -> list[PrSpec]:
        out = list(self.prs)
        for gen in self.generators:
            out.extend(gen.prs())
        return sorted(out, key=lambda p: (p.at, p.id))

    def route_order(self) -> list[AccountSpec]:
        """Main accounts first, then each fallback after what it backs up."""
        mains = [a for a in self.accounts if a.fallback_for is None]
        backups = [a for a in self.accounts if a.fallback_for is not None]
        return mains + backups


def load_scenario(path: Path) -> Scenario:
    """YAML (JSON is YAML too); errors name the field, as config errors do."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a scenario is a mapping of keys, got {type(data).__name__}")
    return Scenario.model_validate(data)
