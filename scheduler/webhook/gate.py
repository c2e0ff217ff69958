"""Who may spend the team's budget: what a verified delivery must pass to be queued.

A valid signature proves only that the forge sent the delivery. On a public repository
anyone can open a pull request, and a webhook installed on an organisation covers every
repository in it, so a signed delivery is not yet a PR the team wants to pay for. The
gate checks, in order: the repository is on `[webhook] repositories`, the author's
association is one of `[webhook] authors` (when listed), the PR is not from a fork
(unless `forks = true`), and the repository has not queued more than `repo_rate` PR
heads in the last hour. Only the last check touches Redis, and it counts only heads
that were really queued: a redelivery or an already queued head gives its place back.
"""

from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass
from typing import cast

import redis as redis_lib

from scheduler.config.webhook import WebhookSettings
from scheduler.state.keys import key_part
from scheduler.webhook.events import Enqueue

__all__ = ["RATE_WINDOW_MS", "Gate", "Place", "RateLimited"]

log = logging.getLogger(__name__)

RATE_WINDOW_MS = 3_600_000  # `repo_rate` counts PR heads per hour

# KEYS[1] = the repository's heads queued in the last window (zset: member -> ms)
# ARGV[1] = the window in ms
# ARGV[2] = how many heads the window holds
# ARGV[3] = the head taking a place (`<pr>@<sha>`)
# Returns -1 when the head took a place, -2 when it held one already, else the ms until
# the oldest place frees.
_TAKE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local window, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZSCORE', KEYS[1], ARGV[3]) then
  return -2
end
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, oldest[2] + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return -1
"""


@dataclass(frozen=True, slots=True)
class Place:
    """A head's place in its repository's hour; `new` when this call took it, so only
    that call may give it back."""

    repo: str
    head: str
    new: bool


@dataclass(frozen=True, slots=True)
class RateLimited:
    """The repository used its places for the hour; one frees in `retry_after_ms`."""

    repo: str
    retry_after_ms: int
    limit: int


class Gate:
    """The checks of `[webhook]`'s who-may-spend settings, for one deployment."""

    def __init__(self, settings: WebhookSettings, redis: redis_lib.Redis, prefix: str) -> None:
        self.settings, self.redis, self.prefix = settings, redis, prefix
        self._take = redis.register_script(_TAKE)

    def refusal(self, action: Enqueue) -> str | None:
        """Why this PR is not reviewed here, or None when it may be."""
        repo = action.repo
        if not self.allows_repo(repo):
            return f"repository {repo!r} is not in [webhook] repositories"
        authors = self.settings.authors
        # Only GitHub says how an author relates to the repository; for GitLab the
        # allowlist and the fork rule decide.
        if authors and action.ref.forge == "github" and action.association not in authors:
            return (
                f"author association {action.association or 'unknown'!r} is not in "
                f"[webhook] authors ({', '.join(authors)})"
            )
        if action.fork and not self.settings.forks:
            return "the pull request comes from a fork, and [webhook] forks = false"
        return None

    def allows_repo(self, repo: str) -> bool:
        """Forge names are case-insensitive; `*` in a pattern also spans subgroups."""
        name = repo.casefold()
        return any(fnmatch.fnmatchcase(name, p.casefold()) for p in self.settings.repositories)

    def _key(self, repo: str) -> str:
        return f"{self.prefix}:webhook:rate:{key_part(repo.casefold())}"

    def take(self, repo: str, head: str) -> Place | RateLimited:
        """A place in the repository's hour for `head` (kept if it held one already),
        or how long until a place frees."""
        limit = self.settings.repo_rate
        if limit == 0:
            return Place(repo, head, new=False)
        args: list[str | int] = [RATE_WINDOW_MS, limit, head]
        wait = int(cast(int, self._take(keys=[self._key(repo)], args=args)))
        if wait < 0:
            return Place(repo, head, new=wait == -1)
        return RateLimited(repo, wait, limit)

    def give_back(self, place: Place) -> None:
        """The head was not queued after all (already queued or reviewed, or the
        enqueue failed). Best effort: a place not given back lapses within the hour."""
        if place.new:
            try:
                self.redis.zrem(self._key(place.repo), place.head)
            except redis_lib.RedisError:
                log.warning("could not give back %s's place in %s's hour", place.head, place.repo)
