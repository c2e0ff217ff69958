"""What the operator commands share: naming a PR on the command line, and reaching
the deployment a config describes (its Redis, RQ queue, admission and key prefixes).

A PR is named the way people paste it: `owner/repo#N`, a GitHub pull request URL, a
GitLab merge request URL, or (for a PR enqueued from a local diff) the id it was given.
Every form becomes the one id Redis state is keyed by (`PullRequestRef.id`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import redis as redis_lib
from rq import Queue

from scheduler.admission import Admission
from scheduler.config import Settings, connect_redis
from scheduler.quota.limiter import LIMITER_PREFIX
from scheduler.state.jobs import review_queue
from scheduler.state.keys import Keys

__all__ = [
    "LIMITER_PREFIX",
    "Deployment",
    "ParsedPr",
    "PrSyntaxError",
    "connect",
    "deployment_prefix",
    "parse_pr",
]


_SHORT = re.compile(r"^(?P<owner>[\w.-]+)/(?P<repo>[\w.-]+)#(?P<number>\d+)$")
_GITHUB_URL = re.compile(
    r"^https?://[^/\s]+/(?P<owner>[\w.-]+)/(?P<repo>[\w.-]+)/pulls?/(?P<number>\d+)(?:[/?#]\S*)?$"
)
_GITLAB_URL = re.compile(
    r"^https?://[^/\s]+/(?P<path>[\w.-]+(?:/[\w.-]+)+)/-/merge_requests/(?P<number>\d+)"
    r"(?:[/?#]\S*)?$"
)
_ANY_ID = re.compile(r"^[^|\s]{1,200}$")  # PullRequestRef.id


class PrSyntaxError(ValueError):
    """The text names no PR reviewq could hold; the message shows the accepted forms."""


@dataclass(frozen=True, slots=True)
class ParsedPr:
    """A PR named on the command line; `owner`/`repo`/`number` only for forge forms."""

    id: str
    forge: Literal["github", "gitlab", "local"]
    owner: str | None = None
    repo: str | None = None
    number: int | None = None


_FORMS = (
    "expected owner/repo#N, https://github.com/owner/repo/pull/N, "
    "a GitLab merge request URL, or the id a local diff was enqueued under"
)


def parse_pr(text: str, *, forge_only: bool = False, gitlab_url: str | None = None) -> ParsedPr:
    """Turn what a person typed into a PR id. `forge_only` refuses a bare id, for
    commands that must look the PR up on its forge. `gitlab_url` is the configured
    GitLab instance: a merge request URL under its relative root
    (`https://example.com/gitlab/group/project/-/merge_requests/1`) names
    `group/project`, not `gitlab/group/project`."""
    text = text.strip()
    root = _relative_root(gitlab_url)
    if root and text.startswith(root + "/") and "/-/merge_requests/" in text:
        text = _origin(text) + text[len(root) :]
    if m := _SHORT.match(text) or _GITHUB_URL.match(text):
        owner, repo, number = m["owner"], m["repo"], int(m["number"])
        if number < 1:
            raise PrSyntaxError(f"{text!r}: PR numbers start at 1")
        return ParsedPr(f"{owner}/{repo}#{number}", "github", owner, repo, number)
    if m := _GITLAB_URL.match(text):
        path, number = m["path"], int(m["number"])
        owner, _, repo = path.rpartition("/")
        return ParsedPr(f"{path}!{number}", "gitlab", owner, repo, number)
    if forge_only or not _ANY_ID.match(text) or "://" in text:
        raise PrSyntaxError(f"{text!r} is not a PR: {_FORMS}")
    return ParsedPr(text, "local")


def _relative_root(url: str | None) -> str | None:
    """The instance URL when it has a path (`https://example.com/gitlab`), else None."""
    if not url:
        return None
    url = url.rstrip("/")
    return url if url.count("/") > 2 else None


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def deployment_prefix(settings: Settings) -> str:
    """The key prefix of a deployment's PR state: the one workers, `serve` and the
    operator commands share, derived from the queue name alone (so inspecting an empty
    deployment needs no account or model)."""
    return f"reviewq:{settings.queue_name}"


@dataclass(frozen=True, slots=True)
class Deployment:
    """One deployment's Redis client, RQ queue, admission and key names."""

    settings: Settings
    redis: redis_lib.Redis
    queue: Queue
    admission: Admission

    @property
    def keys(self) -> Keys:
        return self.admission.keys

    @property
    def prefix(self) -> str:
        return self.admission.keys.prefix

    def close(self) -> None:
        self.redis.close()


def connect(settings: Settings, *, ping: bool = True) -> Deployment:
    """Clients for the deployment `settings` describe. `ping` fails fast (exit code 3
    through the CLI group) rather than at the first real command."""
    client = connect_redis(settings.redis_url)
    if ping:
        client.ping()
    queue = review_queue(settings.queue_name, client)
    admission = Admission(
        client, queue, prefix=deployment_prefix(settings), fairness=settings.review.fairness
    )
    return Deployment(settings, client, queue, admission)
