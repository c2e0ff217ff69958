"""What an incremental review covers, as data the posted review renders.

A push after a review plans only the files whose content changed since then
(`workers.incremental`); the review that follows must say so, or it reads as if the
rest of the PR had been looked at again. The plan carries this record and the sinks
render it (`workers.forge.sinks.scope_line`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["EarlierReview", "ReviewScope"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EarlierReview(_Frozen):
    """A review posted at `head` that covers some of the files not reviewed again;
    `location` is where the sink put it (a review URL, or a Redis key for the log)."""

    head: str = Field(min_length=7, max_length=64, pattern=r"^[0-9a-f]+$")
    location: str | None = Field(default=None, max_length=2000)


class ReviewScope(_Frozen):
    """An incremental review: `covered` are the files planned now (changed since
    `since`, the newest head reviewed before), `carried` the files whose content is
    the one an earlier review saw, so they were not sent again. `diverged`: the
    history was rewritten (a force push or rebase), so files were matched by content
    rather than by commit history."""

    since: str = Field(min_length=7, max_length=64, pattern=r"^[0-9a-f]+$")
    covered: tuple[str, ...] = ()
    carried: tuple[str, ...] = ()
    earlier: tuple[EarlierReview, ...] = ()
    diverged: bool = False
