"""What a simulated provider is: flavour, plan, speed, and the faults it injects.

Rates are independent per-request probabilities, drawn from a seeded generator so a
test or a `simulate` run can be replayed. Latencies and cold starts are simulated
seconds; the client timeout a timeout fault outlasts is real seconds, because that is
the clock the client's own timeout runs on.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hmac
import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scheduler.quota.plans import Plan, Window

__all__ = [
    "BASE_PATHS",
    "DEFAULT_MODELS",
    "DEV_KEY",
    "Faults",
    "Flavour",
    "Latency",
    "ProviderConfig",
]

Flavour = Literal["synthetic", "zai", "openai"]

# Not a secret: a fixed key so that scripts and docs can name it.
DEV_KEY = "sk-sandbox-reviewq-dev-key"

DEFAULT_MODELS: dict[Flavour, tuple[str, ...]] = {
    "synthetic": (
        "hf:zai-org/GLM-4.6",
        "hf:deepseek-ai/DeepSeek-V3.1",
        "hf:Qwen/Qwen3-Coder-480B-A35B-Instruct",
    ),
    "zai": (
        "glm-4.6",
        "glm-4.5-air",
        "glm-5",
        "glm-4.7",
        "glm-5.1",
        "glm-5.2",
        "glm-5.3",
        "glm-5-turbo",
    ),
    "openai": ("gpt-4.1", "gpt-4.1-mini"),
}

# Where each flavour's real base URL lands, so configs only swap the host.
BASE_PATHS: dict[Flavour, str] = {
    "synthetic": "/openai/v1",
    "zai": "/api/coding/paas/v4",
    "openai": "/v1",
}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Latency(_Model):
    """Lognormal service time in simulated seconds, given as median and 95th percentile."""

    median_s: float = Field(default=20.0, gt=0)
    p95_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Latency:
        if self.p95_s < self.median_s:
            raise ValueError("p95_s must be at least median_s")
        return self

    @property
    def mu_sigma(self) -> tuple[float, float]:
        """The lognormal's parameters: the 95th percentile sits 1.645 sigma above."""
        return math.log(self.median_s), (math.log(self.p95_s) - math.log(self.median_s)) / 1.645


class Faults(_Model):
    """Misbehaviour to inject; every rate is a probability per chat request."""

    error_rate: float = Field(default=0.0, ge=0, le=1)
    timeout_rate: float = Field(default=0.0, ge=0, le=1)
    client_timeout_s: float = Field(default=30.0, gt=0)
    timeout_action: Literal["answer", "drop"] = "answer"
    garbage_rate: float = Field(default=0.0, ge=0, le=1)
    cold_start_s: float = Field(default=0.0, ge=0)
    idle_s: float = Field(default=600.0, ge=0)
    fair_use: bool = False


class ProviderConfig(_Model):
    """One simulated provider key.

    `provider_quota`, when set, replaces the plan's windows with what the provider
    really enforces for this key (smaller, when someone else shares it). It is not
    scaled by `packs`. `concurrency` likewise overrides the plan's cap.
    """

    flavour: Flavour
    plan: Plan
    packs: int = Field(default=1, ge=1, le=100)
    api_key: str = Field(default=DEV_KEY, min_length=1)
    models: tuple[str, ...] = ()
    time_scale: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    latency: Latency = Latency()
    seed: int | None = None
    faults: Faults = Faults()
    provider_quota: tuple[Window, ...] | None = None
    concurrency: int | None = Field(default=None, ge=1)
    # Synthetic's `/v2/quotas` answers an API key `{}` since about 2026-09-14.
    quota_endpoint_empty: bool = False

    @property
    def credit_metered(self) -> bool:
        """A Z.AI V3 key: every call billed in credits from its tokens (`credits`)."""
        return self.flavour == "zai" and any(w.unit == "credits" for w in self.plan.windows)

    def key_matches(self, header: str | None, *, raw_ok: bool = False) -> bool:
        """`Bearer <key>`; Z.AI's quota endpoint also takes the raw key."""
        value = (header or "").strip()
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer":
            value = token.strip()
        elif not raw_ok:
            return False
        return hmac.compare_digest(value.encode(), self.api_key.encode())

    @property
    def known_models(self) -> tuple[str, ...]:
        return self.models or DEFAULT_MODELS[self.flavour]

    @property
    def concurrency_cap(self) -> int | None:
        if self.concurrency is not None:
            return self.concurrency
        return None if self.plan.concurrency is None else self.plan.concurrency * self.packs

    @property
    def concurrency_per_model(self) -> bool:
        return self.plan.concurrency_per_model

    def cost_milli(self, model: str, when: dt.datetime) -> int:
        """The plan's weight for `model` at simulated time `when`, in milli-units.

        Read from the plan's rules here rather than through `Plan.cost_milli`, so a
        slip in the scheduler's weighting shows up as a disagreement with the referee.
        """
        for rule in self.plan.model_costs:
            if not fnmatch.fnmatchcase(model, rule.pattern):
                continue
            weight = rule.weight
            if rule.peak_weight is not None:
                offset = dt.timezone(dt.timedelta(hours=rule.utc_offset_hours))
                start, end = rule.peak_hours
                if start <= when.astimezone(offset).hour < end:
                    weight = rule.peak_weight
            return round(weight * 1000)
        return round(self.plan.default_weight * 1000)
