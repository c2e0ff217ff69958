"""`Settings`: everything a reviewq process runs with, as validated models. Reading
them from a file and the environment is `scheduler.config.loader`'s job."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scheduler.config.errors import ConfigError, UnknownAccount
from scheduler.config.planning import PlanningConfig
from scheduler.config.redisconn import SENTINEL_SCHEME, parse_sentinel_url
from scheduler.config.review import ReviewSettings
from scheduler.config.webhook import WebhookSettings
from scheduler.quota.plans import Account, Policy

__all__ = ["AccountConfig", "Settings", "api_key"]


class Settings(BaseModel):
    """Everything a reviewq process needs to find Redis and the provider accounts.

    Later sections (webhook, sinks) join as fields with defaults. Unknown keys stay
    errors so a typo is reported instead of silently falling back to a default.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Left out of repr: a URL may carry the Redis password.
    redis_url: str = Field(
        default="redis://localhost:6379/0",
        pattern=r"^(redis|rediss|unix|redis\+sentinel)://",
        repr=False,
    )
    queue_name: str = Field(default="reviewq", pattern=r"^[\w.:-]{1,100}$")
    default_policy: Policy = Policy()
    accounts: list[Account] = Field(default_factory=list)
    review: ReviewSettings = ReviewSettings()
    planning: PlanningConfig = PlanningConfig()
    webhook: WebhookSettings = WebhookSettings()

    @field_validator("redis_url")
    @classmethod
    def _sentinel_url(cls, url: str) -> str:
        # Checked at load: a malformed Sentinel URL is a config error, not a crash later.
        if url.startswith(f"{SENTINEL_SCHEME}://"):
            parse_sentinel_url(url)
        return url

    @field_validator("accounts")
    @classmethod
    def _unique_names(cls, accounts: list[Account]) -> list[Account]:
        # Names key the limiter's Redis state: two accounts sharing one would share quota.
        first: dict[str, int] = {}
        for i, account in enumerate(accounts):
            if account.name in first:
                raise ValueError(
                    f"duplicate account name {account.name!r} "
                    f"(accounts[{first[account.name]}] and accounts[{i}])"
                )
            first[account.name] = i
        return accounts

    @model_validator(mode="after")
    def _credit_plans_priced(self) -> Settings:
        """A credit plan must price the model reviews use, and bound what a call can
        bill, before any worker starts: else its grants could not reserve the cost."""
        if not any(a.plan.credit_windows for a in self.accounts):
            return self
        model = self.review.model_for(self.accounts)
        problems = [p for a in self.accounts if (p := _unpriced(a, model))]
        thinking = self.review.thinking_for(self.accounts)
        if thinking is None or (thinking["type"] == "enabled" and "budget_tokens" not in thinking):
            problems.append(
                "[review] thinking: a credit plan bills reasoning as output, so it must be "
                "bounded: set thinking = 'disabled', or 'enabled' with a thinking_budget"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def account(self, name: str) -> Account:
        """Look an account up by name; the error lists the names that do exist."""
        for account in self.accounts:
            if account.name == name:
                return account
        known = ", ".join(a.name for a in self.accounts) or "none configured"
        raise UnknownAccount(f"unknown account {name!r}; accounts: {known}")


def _unpriced(account: Account, model: str) -> str | None:
    plan = account.plan
    if not plan.credit_windows or plan.price_for(model) is not None:
        return None
    table = ", ".join(p.pattern for p in plan.prices) or "empty"
    return (
        f"account {account.name!r}: model {model!r} has no price in the price table of "
        f"plan {plan.name!r} (prices for: {table}); set [review] model to a priced model, "
        "or add its price in the account's plan_overrides.prices"
    )


class AccountConfig(BaseModel):
    """One `[[accounts]]` table as written; `load_settings` resolves it into an Account.

    `plan` is a preset name or an inline table of Plan fields. `plan_overrides`
    replaces whole Plan fields (e.g. `windows`). `concurrency` overrides the plan's
    per-pack concurrency, so packs still multiply it. `policy` keys not given fall
    back to `[default_policy]`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    provider: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    plan: str | dict[str, Any]
    plan_overrides: dict[str, Any] = Field(default_factory=dict)
    packs: int = 1
    concurrency: int | None = Field(default=None, ge=1)
    policy: dict[str, Any] = Field(default_factory=dict)
    # `{defer = "large", min_messages = 20, max_defer = "6h"}`: see OffPeakPolicy.
    offpeak: dict[str, Any] | None = None
    # How often a busy deployment polls the quota endpoint ("60s"; default by plan).
    quota_poll: str | int | None = None

    @field_validator("plan", mode="before")
    @classmethod
    def _plan_shape(cls, value: Any) -> Any:
        # Checked up front: the str | dict union would otherwise report one error per arm.
        if not isinstance(value, str | dict):
            raise ValueError("expected a preset name or an inline table of plan fields")
        return value


def api_key(account: Account, env: Mapping[str, str] = os.environ) -> str:
    """The account's key, read at the last moment; the error names the variable only."""
    value = env.get(account.api_key_env, "").strip()
    if not value:
        raise ConfigError(
            f"account {account.name!r}: environment variable {account.api_key_env} is not set; "
            "export it with this account's API key"
        )
    return value
