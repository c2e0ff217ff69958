"""What a pull request changed, in the shape GitHub's "list PR files" API gives it.

Both sources of a PR (the GitHub API and a local unified diff) produce these, so
planning never knows where the files came from.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ChangedFile", "FileStatus"]

FileStatus = Literal["added", "removed", "modified", "renamed", "copied", "changed", "unchanged"]


class ChangedFile(BaseModel):
    """One file of a PR. `patch` is None when GitHub leaves it out: a binary file, or
    a diff too large for the API (it then must be skipped or fetched another way)."""

    model_config = ConfigDict(frozen=True)

    filename: str = Field(min_length=1)
    status: FileStatus = "modified"
    additions: int = Field(default=0, ge=0)
    deletions: int = Field(default=0, ge=0)
    changes: int = Field(default=0, ge=0)
    patch: str | None = None
    previous_filename: str | None = None
