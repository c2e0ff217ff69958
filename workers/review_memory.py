"""What reviewq already said on a PR, so a push never posts the same finding twice.

Every push used to get a full review that repeated every unchanged finding, and an
author who fixed nothing read the same comment on the same line again and again. A
comment is remembered by a fingerprint of its path, line, body (spaces and case
folded) and the code on that line, with where it was posted; a later review of the
PR posts only comments not seen before, and lists the repeats with a link to the
review that first made them. The code is part of the fingerprint: a finding on a line
whose code changed is news, and is posted again.

Kept in Redis, one hash per PR (`<prefix>:pr:<pr>:posted`: fingerprint -> location),
for as long as reviews are kept. It works with incremental review: a review that
covers only some files simply has fewer comments to compare.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import redis as redis_lib

from scheduler.state.keys import Keys
from workers.review.diff import new_side_text
from workers.review.model import Review, ReviewComment
from workers.review.plan import ReviewPlan
from workers.review.replies import listed
from workers.review.safe_markdown import code_span

__all__ = ["Repeat", "code_at", "fingerprint", "new_only", "remember"]

_LISTED = 50  # repeats listed by name in the body; the rest are counted


@dataclass(frozen=True, slots=True)
class Repeat:
    """A comment not posted again, and where it was posted first (None: unknown)."""

    comment: ReviewComment
    location: str | None


def fingerprint(comment: ReviewComment, code: str) -> str:
    """Path, line range, body with spaces and case folded, and the line's code."""
    body = " ".join(comment.body.split()).casefold()
    parts = (comment.path, str(comment.start_line or ""), str(comment.line), body, code.strip())
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def code_at(plan: ReviewPlan) -> dict[tuple[str, int], str]:
    """The code of every new-side line the plan's messages showed, by (path, line)."""
    shown: dict[tuple[str, int], str] = {}
    for message in plan.messages:
        for path, lines in new_side_text(message.text).items():
            shown.update(((path, n), text) for n, text in lines.items())
    return shown


def _key(keys: Keys, pr: str) -> str:
    return f"{keys.meta(pr)}:posted"


def new_only(
    redis: redis_lib.Redis, keys: Keys, review: Review, code: Mapping[tuple[str, int], str]
) -> tuple[Review, list[Repeat]]:
    """The review without the comments already posted on the PR, and those repeats;
    the body lists the repeats with a link to where each was posted."""
    if not review.comments:
        return review, []
    prints = [fingerprint(c, code.get((c.path, c.line), "")) for c in review.comments]
    found = cast(list[bytes | None], redis.hmget(_key(keys, review.pr), prints))
    fresh = [c for c, seen in zip(review.comments, found, strict=True) if seen is None]
    repeats = [
        Repeat(c, seen.decode() or None)
        for c, seen in zip(review.comments, found, strict=True)
        if seen is not None
    ]
    if not repeats:
        return review, []
    summary = review.summary.rstrip() + "\n\n" + _listing(repeats)
    return review.model_copy(update={"comments": tuple(fresh), "summary": summary}), repeats


def remember(
    redis: redis_lib.Redis,
    keys: Keys,
    review: Review,
    code: Mapping[tuple[str, int], str],
    location: str | None,
    ttl_s: int,
) -> None:
    """Note the review's comments as posted at `location` (kept for `ttl_s`); a
    fingerprint already noted keeps its first location."""
    if not review.comments:
        return
    key = _key(keys, review.pr)
    pipe = redis.pipeline(transaction=False)
    for c in review.comments:
        pipe.hsetnx(key, fingerprint(c, code.get((c.path, c.line), "")), location or "")
    pipe.expire(key, ttl_s)
    pipe.execute()


def _listing(repeats: Sequence[Repeat]) -> str:
    shown = repeats[: listed(len(repeats), _LISTED)]
    rows = [f"- {_where(r.comment)}{_link(r.location)}" for r in shown]
    if len(repeats) > len(shown):
        rows.append(f"- … and {len(repeats) - len(shown)} more")
    return (
        f"**Earlier findings that still apply ({len(repeats)})**: the same comment on the "
        "same unchanged code was posted before and is not repeated.\n\n" + "\n".join(rows)
    )


def _where(comment: ReviewComment) -> str:
    start = comment.start_line
    lines = f"{start}-{comment.line}" if start is not None else str(comment.line)
    return code_span(f"{comment.path}:{lines}")


def _link(location: str | None) -> str:
    """A link only to an http(s) URL with nothing that could end the markdown link."""
    where = location or ""
    if where.startswith(("https://", "http://")) and not any(c in where for c in " ()<>[]\n"):
        return f" ([earlier review]({where}))"
    return ""
