"""Everything a simulated provider remembers: windows, slots, counters and logs.

All of it is touched only from the server's event loop, and every decision runs
without an `await` between check and charge, so no lock is needed and no two requests
can both take the last unit of a window.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

from scheduler.sandbox.provider.clock import SimClock
from scheduler.sandbox.provider.config import ProviderConfig
from scheduler.sandbox.provider.credits import CallTokens, CreditMeter
from scheduler.sandbox.provider.windows import (
    SimWindow,
    build_window,
    max_used_in_any_window,
    preload,
)

__all__ = ["LogEntry", "Simulator", "Verdict"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """Why a request does not fit: the window that frees last, and when it does."""

    window: SimWindow
    free_at: float


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One chat request as the provider saw it; `cost` is what it was charged."""

    t: float
    model: str
    status: int
    code: str | None
    cost: int

    def as_json(self) -> dict[str, Any]:
        return {
            "t": round(self.t, 6),
            "model": self.model,
            "status": self.status,
            "code": self.code,
            "cost": self.cost,
        }


class Simulator:
    """The provider's state for one key; the app turns it into HTTP."""

    def __init__(self, config: ProviderConfig, clock: SimClock | None = None) -> None:
        self.config = config
        self.clock = clock or SimClock(config.time_scale)
        self.in_flight: Counter[str] = Counter()
        self.meter = CreditMeter(config.plan, config.seed) if config.credit_metered else None
        self.reset()

    def reset(self) -> None:
        """Forget counters, logs and spending; requests still running keep their slots."""
        self.windows: list[SimWindow] = self._fresh_windows()
        self.admissions: list[tuple[float, int]] = []
        self.log: list[LogEntry] = []
        self.status_counts: Counter[str] = Counter()
        self.code_429: Counter[str] = Counter()
        self.fault_counts: Counter[str] = Counter()
        self.quota_refusals: Counter[str] = Counter()
        self.max_in_flight = sum(self.in_flight.values())
        self.max_in_flight_by_model: Counter[str] = Counter(self.in_flight)
        self.last_busy: float | None = None
        # Credit plans: what the provider billed for chat requests (milli-credits), and
        # the tokens it counted.
        self.credits_charged = 0
        self.tokens: Counter[str] = Counter()
        seed = self.config.seed
        self.latency_rng = random.Random(seed)
        self.fault_rng = random.Random(None if seed is None else seed + 1)

    def _fresh_windows(self) -> list[SimWindow]:
        cfg = self.config
        if cfg.provider_quota is not None:
            return [build_window(w) for w in cfg.provider_quota]
        return [build_window(w, packs=cfg.packs) for w in cfg.plan.windows]

    def reconfigure(self, changes: dict[str, Any]) -> None:
        """Apply a validated change; a new quota keeps the spending already admitted."""
        merged = self.config.model_dump()
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        config = ProviderConfig.model_validate(merged)
        if config.time_scale != self.config.time_scale:
            raise ValueError("time_scale cannot change while the server runs")
        quota_changed = (config.provider_quota, config.packs, config.plan) != (
            self.config.provider_quota,
            self.config.packs,
            self.config.plan,
        )
        self.config = config
        if quota_changed:
            now = self.clock.now()
            self.windows = self._fresh_windows()
            for window in self.windows:
                preload(window, self.admissions, now)

    def refusal_cause(self, now: float, cost: int) -> str:
        """Why a quota refusal happened: `over_plan` if the plan's own windows (what the
        client was told it may spend) would refuse `cost` too, so the client admitted
        more than its plan; `shared_quota` if only a `provider_quota` smaller than the
        plan refuses it (someone else spends on the key). A regenerating window is
        rebuilt without its ticks, which only errs towards `over_plan`."""
        cfg = self.config
        if cfg.provider_quota is None:
            return "over_plan"
        for spec in cfg.plan.windows:
            window = build_window(spec, packs=cfg.packs)
            preload(window, self.admissions, now)
            if window.used(now) + cost > window.limit:
                return "over_plan"
        return "shared_quota"

    def concurrency_full(self, model: str) -> bool:
        cap = self.config.concurrency_cap
        if cap is None:
            return False
        held = self.in_flight[model] if self.config.concurrency_per_model else self.total_in_flight
        return held >= cap

    @property
    def total_in_flight(self) -> int:
        return sum(self.in_flight.values())

    def check_windows(self, now: float, cost: int) -> Verdict | None:
        """None if `cost` fits every window now, else the window that frees last."""
        worst: Verdict | None = None
        for window in self.windows:
            if window.used(now) + cost <= window.limit:
                continue
            free = window.free_at(now, cost)
            # More than the whole limit never fits; name the window's full refill instead.
            free = window.empty_at(now) if free is None else free
            if worst is None or free > worst.free_at:
                worst = Verdict(window, free)
        return worst

    def bill(self, tokens: CallTokens, cost: int) -> None:
        """Count a credit plan's call: its credits and tokens (charged by `admit`)."""
        self.credits_charged += cost
        self.tokens.update(
            prompt=tokens.prompt,
            cached=tokens.cached,
            completion=tokens.completion,
            reasoning=tokens.reasoning,
        )

    def admit(self, now: float, model: str, cost: int) -> bool:
        """Charge every window and take a slot; True if the provider was cold."""
        cold = self.is_cold(now)
        for window in self.windows:
            window.charge(now, cost)
        self.admissions.append((now, cost))
        self.in_flight[model] += 1
        self.max_in_flight = max(self.max_in_flight, self.total_in_flight)
        by_model = self.max_in_flight_by_model
        by_model[model] = max(by_model[model], self.in_flight[model])
        self.last_busy = now
        return cold

    def is_cold(self, now: float) -> bool:
        faults = self.config.faults
        if faults.cold_start_s <= 0 or self.total_in_flight > 0:
            return False
        return self.last_busy is None or now - self.last_busy >= faults.idle_s

    def release(self, model: str) -> None:
        self.in_flight[model] -= 1
        if self.in_flight[model] <= 0:
            del self.in_flight[model]
        self.last_busy = self.clock.now()

    def record(self, now: float, model: str, status: int, code: str | None, cost: int) -> None:
        self.log.append(LogEntry(now, model, status, code, cost))
        self.status_counts[str(status)] += 1
        if status == 429:
            self.code_429[code or "none"] += 1

    def roll(self, rate: float) -> bool:
        """One fault draw; a zero rate draws nothing, so enabling a fault is replayable."""
        return rate > 0 and self.fault_rng.random() < rate

    def draw_latency(self) -> float:
        mu, sigma = self.config.latency.mu_sigma
        return (
            self.latency_rng.lognormvariate(mu, sigma)
            if sigma > 0
            else self.config.latency.median_s
        )

    def stats(self) -> dict[str, Any]:
        now = self.clock.now()
        return {
            "sim_now": now,
            "clock": {
                "time_scale": self.clock.time_scale,
                "wall_start": self.clock.wall_start,
                "skipped": self.clock.skipped,
            },
            "requests": len(self.log),
            "admitted": len(self.admissions),
            "by_status": dict(self.status_counts),
            "429_by_code": dict(self.code_429),
            "faults": dict(self.fault_counts),
            "quota_refusals": dict(self.quota_refusals),
            "in_flight": self.total_in_flight,
            "credits_charged": self.credits_charged,
            "tokens": dict(self.tokens),
            "max_in_flight": {
                "overall": self.max_in_flight,
                "by_model": dict(self.max_in_flight_by_model),
            },
            "windows": [self._window_stats(w, now) for w in self.windows],
        }

    def _window_stats(self, window: SimWindow, now: float) -> dict[str, Any]:
        return {
            "name": window.name,
            "kind": window.kind,
            "unit": window.unit,
            "limit": window.limit,
            "duration_s": window.duration,
            "bound": window.bound(),
            "max_used_in_any_window": max_used_in_any_window(self.admissions, window.duration),
            "used_now": window.used(now),
        }
