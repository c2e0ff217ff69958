"""A review's plan as data: its messages, and what it skipped or only summarised.

Planning makes one and replies read one back, so it lives apart from both."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from workers.review.scope import ReviewScope

__all__ = ["PlannedMessage", "ReviewPlan", "SkippedFile"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SkippedFile(_Frozen):
    path: str
    reason: str


class PlannedMessage(_Frozen):
    """One request's worth of review: `text` is the user message, sent as is.

    `tokens` estimates the whole prompt (system prompt plus `text`). `part` is (k, n)
    when this message holds the k-th of n pieces of one file's diff. A `summary`
    message holds only per-file statistics of a degraded PR, never diff lines.
    """

    index: int = Field(ge=0)
    files: tuple[str, ...]
    text: str
    tokens: int = Field(ge=0)
    part: tuple[int, int] | None = None
    kind: Literal["diff", "summary"] = "diff"
    # The comment cap the system prompt names (None: the default), so a rerun sends
    # the prompt that was measured when the message was planned.
    max_comments: int | None = Field(default=None, ge=0)
    # The prompt file's version the message was planned with (None: planned before
    # versions were recorded; the current one is sent), so a retry or rerun sends the
    # same wording, and a stored plan says which prompt its review was asked with.
    prompt_version: str | None = Field(default=None, max_length=64)


class ReviewPlan(_Frozen):
    """Every message of one review, plus what the review must say it left out."""

    messages: tuple[PlannedMessage, ...]
    skipped: tuple[SkippedFile, ...]
    summarised: tuple[str, ...] = ()
    # Large machine-formatted data, summarised for its reason whatever the PR's size
    # (`workers.review.datafiles`); at most one summary message covers them.
    summarised_data: tuple[SkippedFile, ...] = ()
    degraded: bool = False
    note: str | None = None
    # Set on an incremental review: the files it covers and the earlier reviews that
    # cover the rest (`workers.review.scope`).
    scope: ReviewScope | None = None

    @property
    def estimated_tokens(self) -> int:
        """Prompt tokens of every message: what the plan costs a token-metered window."""
        return sum(m.tokens for m in self.messages)
