"""The `[planning]` settings, apart from the planner so the config loader can read them
without importing the provider client (which itself reads the config)."""

from __future__ import annotations

import fnmatch

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

__all__ = ["PlanningConfig", "RepoOverride"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RepoOverride(_Frozen):
    """Per-repository globs: `skip` adds to the global ones; `keep` rescues a file that
    a default rule (lockfile, generated, vendored, minified) would skip."""

    skip: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()


class PlanningConfig(_Frozen):
    """The `[planning]` table of the config file.

    `max_message_tokens` bounds each whole request (system prompt included), since it
    is the context a model must hold; `model_max_tokens` maps fnmatch patterns of
    model names to their own bound, the first matching pattern winning.

    What one PR may cost: above `large_pr_files` reviewable files only the
    `large_pr_full_files` riskiest are reviewed line by line, and a review never plans
    more than `max_messages` messages (the riskiest files that fit are reviewed in full,
    the rest summarised); None lifts either bound. `max_diff_bytes` bounds a local diff
    (`reviewq enqueue --diff`), which travels in its plan job.
    """

    skip: tuple[str, ...] = ()
    repos: dict[str, RepoOverride] = Field(default_factory=dict)
    max_message_tokens: PositiveInt = 8000
    model_max_tokens: dict[str, PositiveInt] = Field(default_factory=dict)
    chars_per_token: float = Field(default=4.0, gt=0, le=100)
    large_pr_files: int | None = Field(default=150, ge=0)
    large_pr_full_files: int = Field(default=50, ge=0)
    max_messages: int | None = Field(default=100, ge=1)
    max_diff_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    # A push after a review plans only the files whose content changed since the
    # reviewed head (docs/incremental.md); `reviewq enqueue --full` overrides it once.
    incremental: bool = True
    # The repository's `.gitattributes` is read from the head once per plan, up to this
    # size (git itself reads at most 100 MB of it; a real one is a few kB).
    gitattributes_max_bytes: int = Field(default=256 * 1024, ge=0, le=100 * 1024 * 1024)

    def budget_for(self, model: str) -> int:
        """Token bound for one message to `model`: exact name first, then patterns."""
        if model in self.model_max_tokens:
            return self.model_max_tokens[model]
        for pattern, tokens in self.model_max_tokens.items():
            if fnmatch.fnmatchcase(model, pattern):
                return tokens
        return self.max_message_tokens

    def override_for(self, repo: str | None) -> RepoOverride:
        """GitHub names are case-insensitive, so `Acme/API` finds the `acme/api` entry."""
        exact = self.repos.get(repo or "")
        same = (o for n, o in self.repos.items() if repo and n.casefold() == repo.casefold())
        return exact or next(same, RepoOverride())
