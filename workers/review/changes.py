"""What a pull request changed, in the shape GitHub's "list PR files" API gives it.

Both sources of a PR (the GitHub API and a local unified diff) produce these, so
planning never knows where the files came from.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ChangedFile", "FileStatus"]

FileStatus = Literal["added", "removed", "modified", "renamed", "copied", "changed", "unchanged"]
# GitHub's versioning policy counts a new enum value as a non-breaking change, so a
# status this code has never seen can arrive in any API version. It is kept as GitHub
# wrote it rather than failing the whole listing; planning, which compares only with
# the known values, then treats the file as a modification (reviewed if it has a patch).
NewStatus = Annotated[str, Field(min_length=1, max_length=64)]


class ChangedFile(BaseModel):
    """One file of a PR. `patch` is None when GitHub leaves it out: a binary file, or
    a diff too large for the API (it then must be skipped or fetched another way)."""

    model_config = ConfigDict(frozen=True)

    filename: str = Field(min_length=1)
    status: FileStatus | NewStatus = "modified"
    additions: int = Field(default=0, ge=0)
    deletions: int = Field(default=0, ge=0)
    changes: int = Field(default=0, ge=0)
    patch: str | None = None
    previous_filename: str | None = None
    # Why the forge held this file's diff back, or flagged it (GitLab's `too_large`,
    # `generated_file`): planning skips the file and lists it with this reason.
    withheld: str | None = None
    # The blob id of the file's new side, as GitHub's file listings give it (`sha`):
    # incremental review (`workers.incremental`) skips a file whose blob it reviewed.
    sha: str | None = Field(default=None, max_length=64, pattern=r"^[0-9a-fA-F]*$")
