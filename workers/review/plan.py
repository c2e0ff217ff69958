"""A review's plan as data: its messages, and what it skipped or only summarised.

Planning makes one and replies read one back, so it lives apart from both."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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


class ReviewPlan(_Frozen):
    """Every message of one review, plus what the review must say it left out."""

    messages: tuple[PlannedMessage, ...]
    skipped: tuple[SkippedFile, ...]
    summarised: tuple[str, ...] = ()
    degraded: bool = False
    note: str | None = None

    @property
    def estimated_tokens(self) -> int:
        """Prompt tokens of every message: what the plan costs a token-metered window."""
        return sum(m.tokens for m in self.messages)
