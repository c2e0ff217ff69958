"""What a scenario's accounts become in a run: the limiter's accounts, every duration
compressed by the time scale, and the provider simulator's config for each, which
keeps its own quota in simulated time. `simulate` wires these to the real parts."""

from __future__ import annotations

from typing import Any

from scheduler.quota.plans import Account, Plan, Policy, Window
from scheduler.sandbox import BASE_PATHS, DEFAULT_MODELS, Faults, Latency, ProviderConfig
from scheduler.sim.scenario import AccountSpec, Scenario

__all__ = [
    "KEY_ENV",
    "accounts",
    "client_timeout_s",
    "provider_config",
    "scenario_model",
    "time_scaled",
]

KEY_ENV = "REVIEWQ_SIM_KEY"
# A grant reaches the simulator on loopback within a few ms; this margin (real ms)
# covers that without wasting budget at high time scales.
_SIM_MARGIN_MS = 200


def time_scaled(plan: Plan, scale: float) -> Plan:
    """The plan as the limiter must see it in real time: every duration divided."""

    def window(w: Window) -> Window:
        update: dict[str, Any] = {"duration_ms": max(1, round(w.duration_ms / scale))}
        if w.tick_ms is not None:
            update["tick_ms"] = max(1, round(w.tick_ms / scale))
        return w.model_copy(update=update)

    return plan.model_copy(update={"windows": tuple(window(w) for w in plan.windows)})


def _policy(spec: AccountSpec, mode: str, scale: float) -> Policy:
    base = spec.policy or Policy()
    if mode == "fifo":  # the baseline: no share, no reserve
        base = base.model_copy(update={"pr_share": 1.0, "reserve": 0.0, "adaptive": None})
    adaptive = base.adaptive.scaled(scale) if base.adaptive is not None else None
    return base.model_copy(update={"arrival_margin_ms": _SIM_MARGIN_MS, "adaptive": adaptive})


def client_timeout_s(sc: Scenario) -> float:
    """The workers' provider read timeout in real seconds: the scenario's, compressed
    like every duration, but never under a second, so real overhead on a loaded
    machine is not mistaken for a provider timeout. Before, a timeout fault held the
    account's only slot for 30 real seconds (the client waited up to 300): a simulated
    day at x3000, so a few faults a week left the soak a backlog it never cleared."""
    return max(1.0, sc.faults.client_timeout / sc.time_scale)


def provider_config(spec: AccountSpec, sc: Scenario) -> ProviderConfig:
    quota = spec.provider_quota
    return ProviderConfig(
        flavour=spec.api_flavour,
        plan=spec.plan,
        packs=spec.packs,
        time_scale=sc.time_scale,
        latency=Latency(median_s=sc.latency.median, p95_s=max(sc.latency.p95, sc.latency.median)),
        seed=sc.seed,
        faults=Faults(
            error_rate=sc.faults.error_rate,
            timeout_rate=sc.faults.timeout_rate,
            client_timeout_s=client_timeout_s(sc),
        ),
        provider_quota=None if quota is None else quota.windows,
        concurrency=None if quota is None else quota.concurrency,
        quota_endpoint_empty=spec.quota_endpoint_empty,
    )


def accounts(
    sc: Scenario, mode: str, urls: dict[str, str], *, offpeak: bool = True
) -> list[Account]:
    out = []
    for spec in sc.route_order():
        out.append(
            Account(
                name=spec.name,
                provider=spec.api_flavour,
                base_url=urls[spec.name] + BASE_PATHS[spec.api_flavour],
                api_key_env=KEY_ENV,
                plan=time_scaled(spec.plan, sc.time_scale),
                packs=spec.packs,
                policy=_policy(spec, mode, sc.time_scale),
                offpeak=spec.offpeak if offpeak else None,
            )
        )
    return out


def scenario_model(sc: Scenario) -> str:
    """The model reviews ask for: the scenario's, else the main plan's default, else the
    first its simulator knows."""
    first = sc.route_order()[0]
    return sc.model or first.plan.default_model or DEFAULT_MODELS[first.api_flavour][0]
