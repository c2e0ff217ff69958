"""Where a finished review goes: Redis (`LogSink`) or the pull request itself (`GitHubSink`).

Jobs run at least once, so a sink is called again after any crash or retry, possibly
for a review it already delivered. Both sinks make a second delivery of the same PR
and head commit a no-op that reports `already_posted`, instead of a duplicate: the
log by an atomic set-if-absent, GitHub by a hidden marker in the review body that is
looked for before posting, in reviews by reviewq's own account only: the marker is
predictable, and anyone who can comment on the PR could otherwise plant it to make
reviewq post nothing (after it had paid for the provider calls).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

import redis as redis_lib

from scheduler.config import ConfigError
from scheduler.state.refs import PullRequestRef
from workers.forge.github import (
    GitHubAuthError,
    GitHubClient,
    GitHubError,
    GitHubRateLimited,
    GitHubReview,
    GitHubServerError,
    GitHubTransportError,
    GitHubUnprocessable,
)
from workers.review.model import Review, ReviewComment
from workers.review.safe_markdown import code_span
from workers.review.scope import EarlierReview, ReviewScope

__all__ = [
    "MAX_BODY_CHARS",
    "ForgeSink",
    "GitHubSink",
    "LogSink",
    "PostResult",
    "Sink",
    "render_body",
    "review_marker",
    "scope_line",
]

log = logging.getLogger(__name__)

# GitHub refuses a review body over 65,536 characters; folded comments can get there.
MAX_BODY_CHARS = 65_536
_TRUNCATED = "\n\n_(truncated: the review is longer than GitHub accepts)_"
_DEFAULT_TTL_S = 30 * 86_400
# An incremental review names the files it covers when there are at most this many.
_NAMED_FILES = 5

# Stores a review only if this head commit has none yet, and only then moves `latest`:
# a late redelivery of an older commit's review must not hide the newer one.
_STORE_LUA = """
if redis.call('HSETNX', KEYS[1], 'sha:' .. ARGV[1], ARGV[2]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'latest', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


@dataclass(frozen=True, slots=True)
class PostResult:
    """`posted`: this call delivered it; `already_posted`: an earlier call had.

    `location` says where it is (a review URL, a Redis key); `folded_comments` counts
    line comments moved into the body because GitHub would not anchor them.
    """

    posted: bool
    already_posted: bool
    location: str | None
    folded_comments: int = 0


class Sink(Protocol):
    name: str

    def post(self, review: Review, ref: PullRequestRef) -> PostResult: ...


class ForgeSink:
    """Posts each review on the PR's own forge: GitHub PRs through one sink, GitLab MRs
    through another, local diffs to the log. The forge sinks are built on first use, so
    a deployment that reviews only one forge needs only that forge's token."""

    name = "forge"

    def __init__(self, log: Sink, makers: dict[str, Callable[[], Sink]]) -> None:
        self._log, self._makers = log, makers
        self._built: dict[str, Sink] = {}

    def post(self, review: Review, ref: PullRequestRef) -> PostResult:
        return self.for_forge(ref.forge).post(review, ref)

    def for_forge(self, forge: str) -> Sink:
        """The sink a PR of `forge` goes to (the log for a local diff)."""
        if forge not in self._makers:
            return self._log
        if forge not in self._built:
            self._built[forge] = self._makers[forge]()
        return self._built[forge]


def _check(review: Review, ref: PullRequestRef) -> None:
    if review.pr != ref.id:
        raise ValueError(f"review is of {review.pr!r}, not of {ref.id!r}")


class LogSink:
    """Keeps reviews in Redis: one hash per PR, one field per head commit, for `ttl_s`.

    Keys: `{prefix}:reviewlog:{pr}` (fields `sha:<sha>` and `latest`) and the index
    `{prefix}:reviewlog`, a sorted set of PR ids by when they last got a new review.
    """

    name = "log"

    def __init__(
        self, redis: redis_lib.Redis, prefix: str = "reviewq", ttl_s: int = _DEFAULT_TTL_S
    ) -> None:
        if ttl_s < 1:
            raise ValueError("ttl_s must be at least 1")
        self._redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._store = redis.register_script(_STORE_LUA)

    def post(self, review: Review, ref: PullRequestRef) -> PostResult:
        _check(review, ref)
        key = _log_key(self.prefix, ref.id)
        args: list[str | int] = [review.head_sha, review.model_dump_json(), self.ttl_s]
        stored = self._store(keys=[key], args=args)
        now_ms = _redis_ms(self._redis)
        index = _index_key(self.prefix)
        pipe = self._redis.pipeline(transaction=False)
        # A redelivery re-adds a PR the index lost (crash between the two writes) but
        # keeps its time: the index orders PRs by their newest review.
        pipe.zadd(index, {ref.id: now_ms}, nx=not stored)
        pipe.zremrangebyscore(index, "-inf", now_ms - self.ttl_s * 1000)
        pipe.expire(index, self.ttl_s)
        pipe.execute()
        return PostResult(bool(stored), not stored, f"redis:{key}#{review.head_sha}")

    @staticmethod
    def get(
        redis: redis_lib.Redis, pr: str, *, prefix: str = "reviewq", head_sha: str | None = None
    ) -> Review | None:
        """The review of `pr` at `head_sha`, or the latest one stored; None if none is."""
        key = _log_key(prefix, pr)
        sha = head_sha if head_sha is not None else _text(redis.hget(key, "latest"))
        if sha is None:
            return None
        raw = _text(redis.hget(key, f"sha:{sha}"))
        return None if raw is None else Review.model_validate_json(raw)

    @staticmethod
    def list_prs(redis: redis_lib.Redis, *, prefix: str = "reviewq") -> list[str]:
        """PR ids with a stored review, most recently reviewed first."""
        members = cast(list[bytes | str], redis.zrevrange(_index_key(prefix), 0, -1))
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]


def _log_key(prefix: str, pr: str) -> str:
    return f"{prefix}:reviewlog:{pr}"


def _index_key(prefix: str) -> str:
    return f"{prefix}:reviewlog"


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) else None


def _redis_ms(redis: redis_lib.Redis) -> int:
    """Redis's clock, which every worker shares, rather than this host's."""
    seconds, micros = cast(tuple[int, int], redis.time())
    return int(seconds) * 1000 + int(micros) // 1000


def review_marker(pr: str, head_sha: str) -> str:
    """The hidden line that identifies reviewq's review of one PR at one commit."""
    return f"<!-- reviewq:review pr={pr} sha={head_sha} -->"


def render_body(
    review: Review, marker: str, folded: Sequence[ReviewComment] = (), *, forge: str = "GitHub"
) -> str:
    """The review's body: marker first (so truncation never cuts it), then the text."""
    parts = [marker]
    if review.stale:
        parts.append(
            f"> **Stale:** this review is of commit `{review.head_sha[:12]}`; the pull "
            "request has moved on since, and its newer commits are not covered."
        )
    if review.scope is not None:
        parts.append(scope_line(review.scope))
    parts.append(review.summary.strip() or "_No general remarks._")
    if folded:
        parts.append(f"#### Comments {forge} could not place on the diff")
        parts += [f"**{code_span(c.path)}, {_lines(c)}**\n\n{c.body.strip()}" for c in folded]
    body = "\n\n".join(parts)
    if len(body) > MAX_BODY_CHARS:
        body = body[: MAX_BODY_CHARS - len(_TRUNCATED)] + _TRUNCATED
    return body


def _lines(comment: ReviewComment) -> str:
    """`line 12`, or `lines 10-12` (an en dash) for a range, as a folded comment's heading says."""
    start = comment.start_line
    if start is not None and start < comment.line:
        return f"lines {start}\u2013{comment.line}"
    return f"line {comment.line}"


def scope_line(scope: ReviewScope) -> str:
    """One line on what an incremental review covers and where the rest was reviewed."""
    n, since = len(scope.covered), scope.since[:12]
    how = "whose content changed" if scope.diverged else "changed"
    files = "file" if n == 1 else "files"
    line = f"This review covers {n} {files} {how} since `{since}`"
    if 0 < n <= _NAMED_FILES:
        line += " (" + ", ".join(code_span(p) for p in scope.covered) + ")"
    if scope.diverged:
        line += " (the history was rewritten: files were matched by content)"
    if not scope.carried:
        return line + "."
    links = ", ".join(_earlier_link(e) for e in scope.earlier[:3])
    which = "reviews {} cover" if len(scope.earlier) > 1 else "review {} covers"
    earlier = f"the earlier {which.format(links)}" if links else "an earlier review covers"
    return f"{line}; {earlier} the other {len(scope.carried)}."


def _earlier_link(earlier: EarlierReview) -> str:
    """A link only to an http(s) URL with nothing that could end the markdown link."""
    where = earlier.location or ""
    plain = where.startswith(("https://", "http://")) and not any(c in where for c in " ()<>[]\n")
    label = f"at `{earlier.head[:12]}`"
    return f"[{label}]({where})" if plain else f"{label} ({code_span(where)})" if where else label


class GitHubSink:
    """Posts one COMMENT review per PR and head commit, with inline comments.

    The marker check is not a lock: two workers posting the same review at the same
    instant could both miss each other's. Callers serialise a PR's posting; this only
    makes a repeat after a crash, a timeout or a 5xx that landed harmless. Rate limits
    and 5xx are raised as they are (nothing, or something marked, was posted) for the
    job to reschedule.

    Only reviews written by `login` count: `[review] github_login` when set, else the
    token's own account (`GET /user`), which GitHub App installation tokens cannot ask.
    """

    name = "github"

    def __init__(self, client: GitHubClient, *, login: str | None = None) -> None:
        self._client = client
        self._login = login.strip() if login and login.strip() else None

    def post(self, review: Review, ref: PullRequestRef) -> PostResult:
        _check(review, ref)
        owner, repo, number = _github_target(ref)
        marker = review_marker(ref.id, review.head_sha)
        found = self._existing(owner, repo, number, review.head_sha, marker)
        if found is not None:
            log.info("review of %s at %s already posted: %s", ref.id, review.head_sha, found.id)
            return PostResult(False, True, found.html_url)
        folded: Sequence[ReviewComment] = ()
        try:
            made = self._create(owner, repo, number, review, marker, folded)
        except GitHubUnprocessable as exc:
            if not review.comments:
                raise
            # GitHub does not say which comment it could not place, so all are folded.
            folded = review.comments
            log.warning("%s; retrying with %d comments in the body", exc, len(folded))
            made = self._create(owner, repo, number, review, marker, folded)
        log.info("posted review of %s at %s: %s", ref.id, review.head_sha, made.html_url)
        return PostResult(True, False, made.html_url, len(folded))

    def _existing(
        self, owner: str, repo: str, number: int, sha: str, marker: str
    ) -> GitHubReview | None:
        """reviewq's own review of this commit, if one is there. A review by anyone
        else (or by a deleted account, which GitHub lists with no user) never counts,
        and the marker must open the body, where `render_body` puts it."""
        login = self.login().casefold()
        for review in self._client.list_reviews(owner, repo, number):
            mine = review.user is not None and review.user.casefold() == login
            if mine and review.commit_id == sha and (review.body or "").startswith(marker):
                return review
        return None

    def login(self) -> str:
        """The account reviews are posted as: the setting, else asked of GitHub once."""
        if self._login is not None:
            return self._login
        try:
            return self._client.viewer_login()
        except (GitHubAuthError, GitHubRateLimited, GitHubServerError, GitHubTransportError):
            raise  # a bad token, or try again later: GitHub's own error says it best
        except GitHubError as exc:
            raise ConfigError(
                f"cannot tell which reviews on a pull request are reviewq's own: {exc}. "
                "GitHub App installation tokens cannot read GET /user; set "
                "[review] github_login to the account reviewq posts as "
                "(for a GitHub App, its bot login, e.g. my-app[bot])"
            ) from None

    def _create(
        self,
        owner: str,
        repo: str,
        number: int,
        review: Review,
        marker: str,
        folded: Sequence[ReviewComment],
    ) -> GitHubReview:
        return self._client.create_review(
            owner,
            repo,
            number,
            commit_id=review.head_sha,
            body=render_body(review, marker, folded),
            comments=() if folded else review.comments,
        )


def _github_target(ref: PullRequestRef) -> tuple[str, str, int]:
    if ref.forge != "github" or not ref.owner or not ref.repo or ref.number is None:
        raise ValueError(f"{ref.id!r} is not a GitHub PR with owner, repo and number")
    return ref.owner, ref.repo, ref.number
