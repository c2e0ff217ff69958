"""The `[review]` table: what workers ask the model for, where reviews go, how much of
a model's output one review may carry, and how PRs share the queue."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from scheduler.config.errors import ConfigError
from scheduler.quota.plans import Account
from scheduler.quota.tokenbound import InputBoundPolicy

__all__ = [
    "DEFAULT_MAX_COMMENTS",
    "DEFAULT_MAX_COMMENT_CHARS",
    "DEFAULT_MODELS",
    "Fairness",
    "ReviewSettings",
]

# What one review may carry of a model's output by default (`[review] max_comments`
# and `max_comment_chars`).
DEFAULT_MAX_COMMENTS = 30
DEFAULT_MAX_COMMENT_CHARS = 4000
# Review calls' temperature, and the characters of a PR description the prompt quotes.
DEFAULT_TEMPERATURE = 0.2
DEFAULT_DESCRIPTION_CHARS = 2000


class Fairness(BaseModel):
    """`fair` caps each PR's messages in flight and orders lines fairly; `fifo` is the
    baseline: every message queued at once, lines in arrival order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["fair", "fifo"] = "fair"
    per_pr_inflight: int = Field(default=2, ge=1, le=1000)

    @property
    def cap(self) -> int:
        return 0 if self.mode == "fifo" else self.per_pr_inflight


# What a provider's plan is for, when `[review] model` does not say (dated presets too).
DEFAULT_MODELS = {"synthetic": "hf:zai-org/GLM-4.6", "zai": "glm-4.6"}


class ReviewSettings(BaseModel):
    """The `[review]` table: what workers ask for, where reviews go, how PRs share."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = Field(default=None, min_length=1, max_length=200)
    max_tokens: int = Field(default=2048, ge=64, le=200_000)
    # Reasoning, which credit plans bill as output: `disabled`, `enabled` (with a
    # `thinking_budget` of tokens), or `provider` (send nothing: the model's default).
    # `auto`: disabled on a credit plan, where unbounded reasoning cannot be reserved
    # for, else `provider`.
    thinking: Literal["auto", "disabled", "enabled", "provider"] = "auto"
    thinking_budget: int | None = Field(default=None, ge=64, le=200_000)
    # How a credit plan's grant bounds a prompt's input tokens (`scheduler.quota.tokenbound`).
    input_bound: InputBoundPolicy = InputBoundPolicy()
    # `forge`: each review goes to its PR's own forge (GitHub or GitLab; local diffs to
    # the log); `github` is that same sink's older name, from before GitLab.
    sink: Literal["log", "forge", "github"] = "log"
    github_url: str = Field(default="https://api.github.com", pattern=r"^https?://")
    github_token_env: str = Field(default="GITHUB_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # The account reviewq posts as, so only its own earlier review stops a repost: the
    # token's `GET /user` answer when unset, which GitHub App tokens cannot ask for.
    github_login: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}(\[bot\])?$"
    )
    # GitLab: the instance (its API is under `/api/v4`), the token's variable, how the
    # token is sent (a personal, project or group access token as `PRIVATE-TOKEN`; an
    # OAuth token as `Bearer`), and the account reviewq posts as (default: `GET /user`).
    gitlab_url: str = Field(default="https://gitlab.com", pattern=r"^https?://[^\s?#]+$")
    gitlab_token_env: str = Field(default="GITLAB_TOKEN", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    gitlab_auth: Literal["private-token", "bearer"] = "private-token"
    gitlab_username: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$"
    )
    # What one review may carry of a model's output: line comments (the prompt names the
    # cap; those over it are counted in the review body, not posted), and characters
    # per comment (docs/prompt.md).
    max_comments: int = Field(default=DEFAULT_MAX_COMMENTS, ge=0, le=1000)
    max_comment_chars: int = Field(default=DEFAULT_MAX_COMMENT_CHARS, ge=200, le=60_000)
    # Sampling for review calls: low, so the same diff gets the same findings and the
    # JSON format holds (None: send none, the provider's default). `response_format`
    # `json_object` asks the provider for one JSON object (OpenAI's field); set it only
    # where the provider accepts it, since an endpoint that does not may refuse the call.
    temperature: float | None = Field(default=DEFAULT_TEMPERATURE, ge=0, le=2)
    response_format: Literal["none", "json_object"] = "none"
    # How much of a PR's description every message quotes to the model (docs/prompt.md).
    description_chars: int = Field(default=DEFAULT_DESCRIPTION_CHARS, ge=0, le=20_000)
    fairness: Fairness = Fairness()

    def model_for(self, accounts: list[Account]) -> str:
        if self.model:
            return self.model
        if accounts and accounts[0].plan.default_model:
            return accounts[0].plan.default_model
        provider = accounts[0].provider if accounts else ""
        if provider not in DEFAULT_MODELS:
            raise ConfigError(f"[review] model is not set and provider {provider!r} has no default")
        return DEFAULT_MODELS[provider]

    def thinking_for(self, accounts: list[Account]) -> dict[str, str | int] | None:
        """The `thinking` field every request carries (None: none is sent)."""
        mode = self.thinking
        if mode == "auto":
            mode = "disabled" if any(a.plan.credit_windows for a in accounts) else "provider"
        if mode == "disabled":
            return {"type": "disabled"}
        if mode == "enabled":
            budget = self.thinking_budget
            return {"type": "enabled"} | ({"budget_tokens": budget} if budget else {})
        return None
