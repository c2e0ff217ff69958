"""Which PR, on which forge, at which head: the one id everything else is keyed by.

It lives in the core because the webhook, intake and admission all key their state
by it, and none of them may import the workers.
"""

from __future__ import annotations

import re
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["PullRequestRef"]

# A path segment as GitHub and GitLab allow them (ASCII letters, digits, `_`, `.`, `-`):
# no `/`, so `a/b` + `c` and `a` + `b/c` can never name one PR.
_SEGMENT = r"[A-Za-z0-9_.-]{1,100}"
_GITHUB_NAME = re.compile(_SEGMENT)
_GITLAB_GROUP = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT}){{0,20}}")


class PullRequestRef(BaseModel):
    """Which PR, on which forge, at which head commit.

    `id` is the stable key everything else uses (limiter PR ids, Redis state):
    `owner/repo#N` for GitHub, `group/project!N` for GitLab, or any name for a local diff.
    A forge PR's id is derived from its owner, repo and number and checked against them,
    and the head is a commit id in hex: every part comes from a payload a sender wrote.
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1, max_length=200, pattern=r"^[^|\s]+$")
    head_sha: str = Field(min_length=7, max_length=64, pattern=r"^[0-9a-f]+$")
    forge: Literal["github", "gitlab", "local"] = "github"
    owner: str | None = None
    repo: str | None = None
    number: int | None = Field(default=None, ge=1)

    @field_validator("head_sha", mode="before")
    @classmethod
    def _lower_sha(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _forge_id(self) -> Self:
        """A forge PR's id must be the one its owner, repo and number spell."""
        if self.forge == "local":
            return self
        owner_form = _GITHUB_NAME if self.forge == "github" else _GITLAB_GROUP
        mark = "#" if self.forge == "github" else "!"
        if not (self.owner and owner_form.fullmatch(self.owner)):
            raise ValueError(f"owner: not a {self.forge} owner: {self.owner!r}")
        if not (self.repo and _GITHUB_NAME.fullmatch(self.repo)):
            raise ValueError(f"repo: not a {self.forge} repository name: {self.repo!r}")
        if self.number is None:
            raise ValueError(f"number: a {self.forge} PR needs its number")
        expected = f"{self.owner}/{self.repo}{mark}{self.number}"
        if self.id != expected:
            raise ValueError(f"id: {self.id!r} does not match {expected!r}")
        return self
