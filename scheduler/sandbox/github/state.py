"""What the fake GitHub holds: pull requests, posted reviews, pending faults, counters.

Like the provider simulator it is its own referee: it parses patches with its own
code and shares nothing with the client under test but the `ChangedFile` shape.
Handlers never `await` between reading and changing this state, and uvicorn runs
them on one event loop, so no lock is needed. The JSON it serves is made in
`shapes.py`, from GitHub's own examples.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from scheduler.sandbox.github.exchanges import ExchangeLog
from scheduler.sandbox.github.history import History
from scheduler.sandbox.github.patches import diff_lines, synthetic_files
from workers.review.changes import ChangedFile

__all__ = [
    "DEV_GITHUB_TOKEN",
    "FakeGitHub",
    "FakeGitHubConfig",
    "FakePull",
    "FaultsUpdate",
    "PostedReview",
    "PullSpec",
    "ReviewSpec",
    "diff_lines",
    "repo_id",
    "synthetic_files",
]

# Not a secret: a fixed token so that scripts and docs can name it.
DEV_GITHUB_TOKEN = "gh-sandbox-reviewq-dev-token"
# A directory: when set, every fake appends each API exchange to a file of its own
# there, as JSON lines, for tests to check against GitHub's OpenAPI description.
EXCHANGE_LOG_ENV = "REVIEWQ_GITHUB_EXCHANGE_LOG"

_Fault = Literal[
    "secondary", "primary", "review_5xx", "after_create", "compare_gone", "contents_5xx"
]
_REPO_PART = r"^[A-Za-z0-9._-]+$"
_FULL_NAME = r"^[A-Za-z0-9._-]+/[A-Za-z0-9._-]+$"


class FakeGitHubConfig(BaseModel):
    """`remote_control` opens `/_gh/*` to non-loopback clients; leave it off.

    The token acts as `bot_login`: `GET /user` names it, and reviews posted with the
    token are written by it. `installation_token` makes the token behave like a GitHub
    App installation token instead, which `GET /user` refuses with a 403.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    token: str = Field(default=DEV_GITHUB_TOKEN, min_length=1)
    files_cap: int = Field(default=3000, ge=1)
    max_per_page: int = Field(default=100, ge=1)
    default_per_page: int = Field(default=30, ge=1)
    rate_limit: int = Field(default=5000, ge=1)
    bot_login: str = Field(default="reviewq-sandbox[bot]", min_length=1)
    installation_token: bool = False
    remote_control: bool = False
    # GitHub leaves `patch` out of a file whose diff is too large (it does not say how
    # large); the fake does so past this many characters, and still anchors comments.
    max_patch_chars: int = Field(default=1_000_000, ge=0)
    exchange_log: str | None = Field(default_factory=lambda: os.environ.get(EXCHANGE_LOG_ENV))

    def token_matches(self, header: str | None) -> bool:
        """GitHub takes `Bearer <token>` and the older `token <token>`."""
        scheme, _, value = (header or "").strip().partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return False
        return hmac.compare_digest(value.strip().encode(), self.token.encode())


class PullSpec(BaseModel):
    """`POST /_gh/prs`: a PR to create, or a new head (with its files) for one that exists.

    `synthetic_files` appends that many generated one-line changes after `files`.
    `head_repo` names a fork the head lives in (`owner/name`); None: the PR's own.
    `body` None is how GitHub shows a PR opened without a description.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    owner: str = Field(pattern=_REPO_PART)
    repo: str = Field(pattern=_REPO_PART)
    number: int = Field(ge=1)
    head_sha: str = Field(min_length=1, max_length=64)
    title: str = "A pull request"
    state: Literal["open", "closed"] = "open"
    draft: bool = False
    body: str | None = None
    author: str = Field(default="octocat", pattern=_REPO_PART)
    head_repo: str | None = Field(default=None, pattern=_FULL_NAME)
    files: tuple[ChangedFile, ...] = ()
    synthetic_files: int = Field(default=0, ge=0, le=20_000)
    # A new head normally descends from the PR's previous one; `force` makes it a
    # force push (a history that diverged). `contents`: other files of the repository
    # at this head, as `GET .../contents/{path}` serves them (a `.gitattributes`).
    force: bool = False
    contents: dict[str, str] = Field(default_factory=dict)


class ReviewSpec(BaseModel):
    """`POST /_gh/reviews`: a review written by someone other than the token's account,
    as a PR's author or another reviewer would leave one. `user` None is how GitHub
    lists a review whose author's account was deleted; `commit_gone` lists it with a
    null `commit_id`, as GitHub does once the commit was garbage collected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    owner: str = Field(pattern=_REPO_PART)
    repo: str = Field(pattern=_REPO_PART)
    number: int = Field(ge=1)
    user: str | None = Field(min_length=1)
    body: str = ""
    commit_id: str | None = None
    commit_gone: bool = False
    state: Literal["COMMENTED", "APPROVED", "CHANGES_REQUESTED"] = "COMMENTED"


class FaultsUpdate(BaseModel):
    """`POST /_gh/faults`; counts are how many upcoming requests misbehave.

    `retry_after_s` None sends a secondary limit with no `retry-after` at all;
    `secondary_wording` "abuse" words it as GitHub's older abuse-detection answer.
    `primary_status` is how the primary limit (injected or the hourly window) answers:
    GitHub documents 403 or 429.
    """

    model_config = ConfigDict(extra="forbid")

    secondary_rate_limit: int | None = Field(default=None, ge=0)
    secondary_status: Literal[403, 429] | None = None
    secondary_wording: Literal["secondary", "abuse"] | None = None
    retry_after_s: int | None = Field(default=60, ge=0)
    primary_rate_limit: int | None = Field(default=None, ge=0)
    primary_status: Literal[403, 429] | None = None
    reset_in_s: int | None = Field(default=None, ge=0)
    review_5xx: int | None = Field(default=None, ge=0)
    review_5xx_after_create: int | None = Field(default=None, ge=0)
    # Comparisons answered 404 (the old commit is gone, as after a force push and a
    # garbage collection); content requests answered 502.
    compare_gone: int | None = Field(default=None, ge=0)
    contents_5xx: int | None = Field(default=None, ge=0)


@dataclass
class Faults:
    secondary_rate_limit: int = 0
    secondary_status: int = 403
    secondary_wording: str = "secondary"
    retry_after_s: int | None = 60
    primary_rate_limit: int = 0
    primary_status: int = 403
    reset_in_s: int = 3600
    review_5xx: int = 0
    review_5xx_after_create: int = 0
    compare_gone: int = 0
    contents_5xx: int = 0


@dataclass
class FakePull:
    """A PR; every head it has had keeps its files, so reviews of older commits resolve."""

    owner: str
    repo: str
    number: int
    title: str
    state: str
    draft: bool
    head_sha: str
    files_by_sha: dict[str, tuple[ChangedFile, ...]] = field(default_factory=dict)
    body: str | None = None
    author: str = "octocat"
    head_repo: tuple[str, str] = ("", "")

    @property
    def files(self) -> tuple[ChangedFile, ...]:
        return self.files_by_sha[self.head_sha]

    @property
    def pr_id(self) -> int:
        """GitHub's numeric id of the PR (not its number), stable per PR."""
        key = f"{self.owner}/{self.repo}#{self.number}".encode()
        return int(hashlib.sha1(key).hexdigest()[:8], 16)


@dataclass
class PostedReview:
    """`commit_id` None: the commit is gone; `submitted_at` None: a PENDING review."""

    id: int
    owner: str
    repo: str
    number: int
    commit_id: str | None
    body: str
    state: str
    comments: list[dict[str, Any]]
    user: str | None
    submitted_at: str | None


def repo_id(owner: str, repo: str) -> int:
    """GitHub's numeric repository id, which its paging links use
    (`/repositories/{id}/...`); stable per repository, as GitHub's is."""
    return int(hashlib.sha1(f"{owner}/{repo}".lower().encode()).hexdigest()[:7], 16)


class FakeGitHub:
    """All the fake's state; `app.state.github` holds one per app."""

    def __init__(self, config: FakeGitHubConfig) -> None:
        self.config = config
        self.pulls: dict[tuple[str, str, int], FakePull] = {}
        self.repos: dict[int, tuple[str, str]] = {}
        self.exchanges = ExchangeLog.open(config.exchange_log)
        self.history = History()
        self.reset()

    def reset(self) -> None:
        """Forget reviews, faults and counters; PRs stay."""
        self.reviews: list[PostedReview] = []
        self.faults = Faults()
        self.stats: Counter[tuple[str, int]] = Counter()
        self.window_start = time.time()
        self.window_used = 0
        self._next_id = 80_000_001

    def upsert(self, spec: PullSpec) -> FakePull:
        files = spec.files + synthetic_files(spec.synthetic_files, len(spec.files))
        key = (spec.owner, spec.repo, spec.number)
        pull = self.pulls.get(key)
        if pull is None:
            pull = FakePull(
                spec.owner, spec.repo, spec.number, spec.title, "", False, spec.head_sha
            )
            self.pulls[key] = pull
        pull.title, pull.state, pull.draft = spec.title, spec.state, spec.draft
        pull.body, pull.author = spec.body, spec.author
        head_owner, _, head_name = (spec.head_repo or f"{spec.owner}/{spec.repo}").partition("/")
        pull.head_repo = (head_owner, head_name)
        parent = None if spec.force or pull.head_sha == spec.head_sha else pull.head_sha
        self.history.push((spec.owner, spec.repo), spec.head_sha, parent, files, spec.contents)
        pull.head_sha = spec.head_sha
        pull.files_by_sha[spec.head_sha] = files
        self.repos[repo_id(spec.owner, spec.repo)] = (spec.owner, spec.repo)
        return pull

    def pull(self, owner: str, repo: str, number: int) -> FakePull | None:
        return self.pulls.get((owner, repo, number))

    def repo_by_id(self, number: int) -> tuple[str, str] | None:
        """The repository a `/repositories/{id}/...` URL (a paging link) names."""
        return self.repos.get(number)

    def take(self, fault: _Fault) -> bool:
        """Use up one injected fault of that kind, if any is left."""
        names = {
            "secondary": "secondary_rate_limit",
            "primary": "primary_rate_limit",
            "review_5xx": "review_5xx",
            "after_create": "review_5xx_after_create",
            "compare_gone": "compare_gone",
            "contents_5xx": "contents_5xx",
        }
        left: int = getattr(self.faults, names[fault])
        if left <= 0:
            return False
        setattr(self.faults, names[fault], left - 1)
        return True

    def update_faults(self, update: FaultsUpdate) -> None:
        for name, value in update.model_dump(exclude_unset=True).items():
            if value is not None or name == "retry_after_s":
                setattr(self.faults, name, value)

    def charge(self, now: float) -> tuple[bool, dict[str, str]]:
        """Count one request in the hourly primary window: (over the limit, its headers).

        The request that takes the last unit succeeds showing `remaining: 0`, as GitHub's
        does; only the ones after it are refused.
        """
        if now >= self.window_start + 3600:
            self.window_start, self.window_used = now, 0
        self.window_used += 1
        limit = self.config.rate_limit
        headers = {
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": str(max(0, limit - self.window_used)),
            "x-ratelimit-reset": str(int(self.window_start + 3600)),
            "x-ratelimit-used": str(min(limit, self.window_used)),
            "x-ratelimit-resource": "core",
        }
        return self.window_used > limit, headers

    def add_review(
        self, pull: FakePull, commit_id: str, body: str, state: str, comments: list[dict[str, Any]]
    ) -> PostedReview:
        """A review posted through the API: written by the token's account."""
        return self._store(pull, commit_id, body, state, comments, self.config.bot_login)

    def add_review_by(self, spec: ReviewSpec) -> PostedReview | None:
        """A review by someone else (control route); None when the PR is unknown."""
        pull = self.pull(spec.owner, spec.repo, spec.number)
        if pull is None:
            return None
        commit = None if spec.commit_gone else spec.commit_id or pull.head_sha
        return self._store(pull, commit, spec.body, spec.state, [], spec.user)

    def pending_review_of(self, pull: FakePull, user: str) -> PostedReview | None:
        """GitHub lets an account hold one PENDING review per PR."""
        key = (pull.owner, pull.repo, pull.number, user, "PENDING")
        found = (r for r in self.reviews if (r.owner, r.repo, r.number, r.user, r.state) == key)
        return next(found, None)

    def _store(
        self,
        pull: FakePull,
        commit_id: str | None,
        body: str,
        state: str,
        comments: list[dict[str, Any]],
        user: str | None,
    ) -> PostedReview:
        review = PostedReview(
            self._next_id,
            pull.owner,
            pull.repo,
            pull.number,
            commit_id,
            body,
            state,
            comments,
            user,
            None if state == "PENDING" else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        self._next_id += 1
        self.reviews.append(review)
        return review

    def stats_json(self) -> dict[str, Any]:
        """Counts of API requests by route template and status (control routes excluded)."""
        routes: dict[str, dict[str, int]] = {}
        for (route, status), count in sorted(self.stats.items()):
            routes.setdefault(route, {})[str(status)] = count
        by_status: Counter[str] = Counter()
        for (_, status), count in self.stats.items():
            by_status[str(status)] += count
        return {
            "requests": sum(self.stats.values()),
            "by_route": routes,
            "by_status": dict(by_status),
            "reviews": len(self.reviews),
        }
