"""Chaos 4: the provider misbehaves.

One run through a 5xx burst, a spell of timeouts, a spell of garbage bodies and cold
starts of 30 simulated seconds, on a key whose real quota is smaller than its plan
(someone else spends on it): each fault is retried within the retry budget, the
provider's own count (its quota header) keeps the limiter inside the smaller quota,
and a quota refusal, if any, is the shared key's doing, never our over-admission.

Then a Z.AI 1313 (fair-use restriction): the account's circuit opens for good, no
request is sent until a person acts (closes the circuit), and then everything
finishes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from harness import Chaos, Fault, base_scenario, check_invariants, run_chaos

from scheduler.sandbox.localredis import LocalRedis
from workers.providers.attempt import RetryPolicy

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(240)]

# Time compression would shrink the retry backoff to milliseconds, below the system's
# own overheads; real-time backoff keeps a fault burst shorter than the retry budget,
# as a 30 s outage is against the production default (2 s doubling to 120 s, 5 tries).
RETRY = RetryPolicy(base_ms=100, cap_ms=1_000, concurrency_hold_ms=200)


def _set(faults: dict[str, Any]) -> Any:
    def action(chaos: Chaos) -> dict[str, Any]:
        chaos.configure_provider({"faults": faults})
        return faults

    return action


class Phases:
    """Each fault in turn, switched on while the provider is busy, off again once it
    has shown itself `count` times (or 30 requests or 15 s later), with a second of
    calm between two faults."""

    def __init__(self, plan: list[tuple[str, dict[str, Any], str, int]]) -> None:
        self.plan, self.calm_until = list(plan), 0.0
        self.on: tuple[str, dict[str, Any], str, int] | None = None
        self.started, self.requests = 0.0, 0

    def tick(self, chaos: Chaos, now_sim: float) -> None:
        now = time.monotonic()
        if self.on is None:
            if not self.plan or now < self.calm_until or now_sim < 1_500:
                return
            stats = chaos.provider_stats()
            if stats["in_flight"] == 0:
                return  # waiting for budget: a fault now would meet no request
            label, faults, kind, count = self.plan.pop(0)
            self.on = (label, faults, kind, stats["faults"].get(kind, 0) + count)
            self.started, self.requests = now, stats["requests"]
            chaos.configure_provider({"faults": faults})
            chaos.event(label, faults=faults)
            return
        label, faults, kind, until = self.on
        stats = chaos.provider_stats()
        seen = stats["faults"].get(kind, 0)
        if seen >= until or stats["requests"] - self.requests > 30 or now - self.started > 15:
            chaos.configure_provider({"faults": dict.fromkeys(faults, 0.0) | _KEEP})
            chaos.event(f"{label} over", seen=seen, real_s=round(now - self.started, 2))
            self.on, self.calm_until = None, now + 1.0


_KEEP = {"client_timeout_s": 2.0}


def test_5xx_timeouts_garbage_cold_starts_and_a_shared_key(
    chaos_redis: LocalRedis, tmp_path: Path, chaos_run: int
) -> None:
    scenario = base_scenario(
        accounts=[
            {
                "name": "synth",
                "plan": {
                    "windows": [{"name": "requests_5h", "limit": 60, "duration": "5h"}],
                    "concurrency": 2,
                },
                # Someone else uses a quarter of the key: the provider allows 45.
                "provider_quota": {
                    "windows": [{"name": "requests_5h", "limit": 45, "duration": "5h"}],
                    "concurrency": 2,
                },
                "policy": {"headroom": 0.1, "pr_share": 0.5, "reserve": 0.1},
            }
        ],
    )
    phases = Phases(
        [
            ("5xx burst", {"error_rate": 1.0}, "5xx", 4),
            ("timeouts", {"timeout_rate": 0.5, "client_timeout_s": 2.0}, "timeout", 2),
            ("garbage bodies", {"garbage_rate": 0.5}, "garbage", 3),
        ]
    )
    faults = [Fault("cold starts", at_s=0, action=_set({"cold_start_s": 30.0, "idle_s": 300.0}))]
    result = run_chaos(
        "provider-faults",
        scenario,
        redis=chaos_redis,
        workdir=tmp_path,
        faults=faults,
        spec_changes={"retry": RETRY},
        on_tick=phases.tick,
        on_end=lambda chaos: chaos.notes.update(sim=chaos.provider_stats()),
    )
    seen = result.notes["sim"]["faults"]
    figures = check_invariants(result, extra={"provider_faults": seen})
    for kind, least in {"5xx": 4, "timeout": 2, "garbage": 3, "cold_start": 1}.items():
        assert seen.get(kind, 0) >= least, (kind, seen)
    refusals = figures["accounts"]["synth"]["quota_refusals"]
    assert set(refusals) <= {"shared_quota"}, refusals
    # The provider's quota (45) held: the shared key's own limit, seen by the referee.
    (window,) = result.notes["sim"]["windows"]
    assert window["max_used_in_any_window"] <= window["limit"] == 45_000


def test_a_1313_stops_the_account_until_a_person_acts(
    chaos_redis: LocalRedis, tmp_path: Path, chaos_run: int
) -> None:
    scenario = base_scenario(
        prs=[{"id": "acme/mono#100", "at": 0, "files": 30, "lines_per_file": 300}],
        generators=[
            {
                "prefix": "acme/api",
                "count": 4,
                "files": 4,
                "lines_per_file": 60,
                "start": "20m",
                "every": "50m",
            },
        ],
    )
    s = scenario.time_scale
    hold_s = 2.5  # how long nobody acts, in wall seconds

    def restrict(chaos: Chaos) -> str:
        chaos.configure_provider({"fair_use": True})
        return "fair_use on"

    def watch(chaos: Chaos, now_sim: float) -> None:
        notes = chaos.notes
        if "opened" not in notes and "restricted" in notes:
            state = chaos.circuit().state("synth")
            if state is not None:
                notes["opened"] = {
                    "code": state.code,
                    "ttl_ms": chaos.circuit().ttl_ms_left("synth"),
                    "provider_t": chaos.provider_stats()["sim_now"],
                    "at": now_sim,
                }
        elif "opened" in notes and "acted" not in notes:
            if now_sim < notes["opened"]["at"] + hold_s * s:
                return
            notes["acted"] = {"provider_t": chaos.provider_stats()["sim_now"]}
            chaos.configure_provider({"fair_use": False})  # the person fixed the cause ...
            chaos.circuit().close("synth")  # ... and closes the circuit
            chaos.event("a person closed the circuit")

    def mark(chaos: Chaos) -> str:
        chaos.notes["restricted"] = True
        return restrict(chaos)

    result = run_chaos(
        "provider-1313",
        scenario,
        redis=chaos_redis,
        workdir=tmp_path,
        faults=[Fault("1313", at_s=3 * s, action=mark)],
        on_tick=watch,
    )
    opened, acted = result.notes.get("opened"), result.notes.get("acted")
    assert opened is not None and acted is not None
    # Requests that reached the provider while the circuit was open (a call granted
    # just before it opened may still land in its first tenth of a second).
    start, end = opened["provider_t"] + 0.1 * s, acted["provider_t"]
    sent = [e for e in result.sim_log["synth"] if start <= e["t"] < end]
    figures = check_invariants(
        result,
        extra={"circuit": opened["code"], "hold_s": hold_s, "sent_while_open": len(sent)},
    )
    assert opened["code"] == "1313"
    assert opened["ttl_ms"] is None  # only a person closes it: no expiry
    assert sent == []  # never retried by itself
    codes = figures["accounts"]["synth"]["429_by_code"]
    assert 1 <= codes.get("1313", 0) <= 2  # the calls in flight when it began, at most
