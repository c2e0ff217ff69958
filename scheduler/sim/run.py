"""One simulation run as the report reads it: its clients, its clock, its PRs. Apart
from `simulate` so the report, the soak and the demo share it without a cycle."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis as redis_lib

from scheduler.admission import Admission
from scheduler.quota.plans import Account
from scheduler.sandbox import ServerHandle
from scheduler.sim.scenario import PrSpec, Scenario

__all__ = ["SimRun"]


@dataclass
class SimRun:
    """What a run leaves for the report: where to read, and the clocks to convert."""

    scenario: Scenario
    policy: str
    redis: redis_lib.Redis
    admission: Admission
    providers: dict[str, ServerHandle]
    t0_ms: int
    accounts: list[Account] = field(default_factory=list)
    ended_ms: int = 0
    prs: list[PrSpec] = field(default_factory=list)

    limiter_prefix: str = "reviewq"

    def sim_s(self, ms: int | None) -> float | None:
        return None if ms is None else round((ms - self.t0_ms) / 1000 * self.scenario.time_scale, 1)
