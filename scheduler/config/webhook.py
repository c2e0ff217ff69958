"""The `[webhook]` table: where `reviewq serve` finds its secrets and how much it accepts.

It lives apart from `scheduler.config` so the webhook package can import it without
pulling in the whole settings loader, and the loader can import it without the server.
Like API keys, the secrets themselves never live in the file: only the names of the
environment variables that hold them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Association", "WebhookSettings"]

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
# A repository or a glob of them: path segments of forge names, `*` and `?`.
_REPO_GLOB = r"^[A-Za-z0-9_.*?-]+(?:/[A-Za-z0-9_.*?-]+)*$"
# GitHub's `author_association` values (REST API, "Pull requests" schema, 2022-11-28).
Association = Literal[
    "OWNER",
    "MEMBER",
    "COLLABORATOR",
    "CONTRIBUTOR",
    "FIRST_TIME_CONTRIBUTOR",
    "FIRST_TIMER",
    "MANNEQUIN",
    "NONE",
]


class WebhookSettings(BaseModel):
    """`max_body_bytes` bounds what one delivery may make the server read (GitHub caps
    payloads at 25 MB, but a pull request event is tens of kB). `dedupe_ttl_s` is how
    long a delivery id is remembered: GitHub lets a person redeliver for 3 days.

    Who may spend the team's budget: a signed delivery proves only that the forge sent
    it, and on a public repository anyone can open a PR. `repositories` lists the
    repositories reviewed (`owner/repo`, `group/sub/project`, or globs such as
    `acme/*`; `*` for any), and `reviewq serve` refuses to start with an empty list.
    `authors` keeps only PRs whose GitHub `author_association` is listed (empty: any
    author); `forks = false` skips PRs opened from a fork. `repo_rate` caps the PR heads
    one repository may queue per hour (0: no cap).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    github_secret_env: str = Field(default="GITHUB_WEBHOOK_SECRET", pattern=_ENV_NAME)
    gitlab_token_env: str = Field(default="GITLAB_WEBHOOK_TOKEN", pattern=_ENV_NAME)
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)
    dedupe_ttl_s: int = Field(default=3 * 86_400, ge=60, le=30 * 86_400)
    repositories: tuple[Annotated[str, Field(pattern=_REPO_GLOB)], ...] = ()
    authors: tuple[Association, ...] = ()
    forks: bool = True
    repo_rate: int = Field(default=30, ge=0, le=100_000)
    # A GitHub PR carrying this label is reviewed at once, never deferred to off-peak
    # prices; adding it to a deferred PR wakes it (as `reviewq enqueue --now` does).
    now_label: str = Field(default="reviewq:now", min_length=1, max_length=50)
