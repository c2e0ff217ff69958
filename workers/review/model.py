"""One PR's review: what the sinks post, gathered from every message's reply."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from workers.review.scope import ReviewScope

__all__ = ["DEFAULT_MAX_COMMENTS", "DEFAULT_MAX_COMMENT_CHARS", "Review", "ReviewComment"]

# What one review carries at most unless `[review]` says otherwise: model output is
# steered by the diff, so its amount is the PR author's to choose, not the model's.
from scheduler.config.review import DEFAULT_MAX_COMMENT_CHARS, DEFAULT_MAX_COMMENTS


class ReviewComment(BaseModel):
    """A comment anchored to a line (or a range of lines) on the new side of the diff
    (GitHub's `RIGHT`)."""

    model_config = ConfigDict(frozen=True)

    path: str = Field(min_length=1)
    line: int = Field(ge=1)
    body: str = Field(min_length=1)
    side: Literal["LEFT", "RIGHT"] = "RIGHT"
    # The first line of a multi-line comment (GitHub's `start_line`, a GitLab range's
    # start), below `line` and in the same hunk; None for a one-line comment.
    start_line: int | None = Field(default=None, ge=1)


class Review(BaseModel):
    """The whole review of one PR at one head commit.

    `summary` is the general body (everything the model did not anchor to a line, plus
    the skipped files and any degradation note); `comments` are the anchored ones.
    `stale` says the PR moved to a newer commit while this one was being reviewed.
    """

    model_config = ConfigDict(frozen=True)

    pr: str
    head_sha: str
    summary: str
    comments: tuple[ReviewComment, ...] = ()
    messages_done: int = 0
    messages_failed: int = 0
    stale: bool = False
    # An incremental review's coverage (see `workers.review.scope`), rendered by the sink.
    scope: ReviewScope | None = None
