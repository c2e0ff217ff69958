"""The `[webhook]` table: where `reviewq serve` finds its secrets and how much it accepts.

It lives apart from `scheduler.config` so the webhook package can import it without
pulling in the whole settings loader, and the loader can import it without the server.
Like API keys, the secrets themselves never live in the file: only the names of the
environment variables that hold them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["WebhookSettings"]

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class WebhookSettings(BaseModel):
    """`max_body_bytes` bounds what one delivery may make the server read (GitHub caps
    payloads at 25 MB, but a pull request event is tens of kB). `dedupe_ttl_s` is how
    long a delivery id is remembered: GitHub lets a person redeliver for 3 days."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    github_secret_env: str = Field(default="GITHUB_WEBHOOK_SECRET", pattern=_ENV_NAME)
    gitlab_token_env: str = Field(default="GITLAB_WEBHOOK_TOKEN", pattern=_ENV_NAME)
    max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)
    dedupe_ttl_s: int = Field(default=3 * 86_400, ge=60, le=30 * 86_400)
