"""Reading model replies, and gathering the replies into one review.

Replies are read leniently, since models wrap JSON in fences and prose; and a comment
is only anchored to a line that is in the diff the model was shown
(`workers.review.diff`), because GitHub rejects a whole review (422) when one comment
points outside the diff.

All model text reaches the `Review` through `gather`, which makes it safe to post
(`workers.review.safe_markdown`) and caps how many comments there are and how long each is:
a prompt-injected diff can make a model write anything, in any amount.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict

from scheduler.state.refs import PullRequestRef
from workers.review.answers import Found, extract
from workers.review.diff import new_side_text
from workers.review.model import (
    DEFAULT_MAX_COMMENT_CHARS,
    DEFAULT_MAX_COMMENTS,
    Review,
    ReviewComment,
)
from workers.review.plan import PlannedMessage, ReviewPlan
from workers.review.safe_markdown import code_span, safe_markdown

__all__ = ["UNREADABLE", "Reply", "author_reason", "gather", "listed", "parse_reply"]

_SUMMARY_CHARS = 4000  # one message's summary in the review body
# The reason a message is failed with when its answer could not be read, twice.
UNREADABLE = "unreadable answer: no review could be read in the model's answer, nor in its retry"
# What a PR's author is told for each kind of failure: the reason recorded for the
# operator (`reviewq inspect`) names HTTP codes, settings and the provider's own words,
# which mean nothing to an author and may quote the diff.
_FOR_AUTHORS = (
    ("unreadable answer", "the model's answer could not be read as a review, even after a "
     "retry with stricter instructions"),
    ("unusable answer", "the model's answers held no review, even after retries"),
    ("too long", "this part is too large for the model to read in one request"),
    ("cancelled", "its review was cancelled"),
    ("no reply was recorded", "no answer was recorded for it"),
)  # fmt: skip
_OTHERWISE = "the model could not be asked for a review; the reviewq operator can see why"
_LISTED = 200  # files listed per section of the review body
_COLLAPSE = 10  # longer lists go inside <details>
_BODY_CHARS = 65_000  # GitHub refuses review bodies over 65,536 characters
_NAMED = 3  # files a message's label names; one more is named rather than counted


class Reply(BaseModel):
    """One message's answer: `unanchored` holds remarks whose path or line was not in
    the diff the model saw; they go into the review body instead of failing it.

    `usable` is False when no review could be read in the answer: such a reply is
    never posted (the message is retried with a stricter instruction, then failed).
    `truncated` says the answer was cut off and only its complete comments were kept."""

    model_config = ConfigDict(frozen=True)

    summary: str
    comments: tuple[ReviewComment, ...]
    unanchored: tuple[str, ...] = ()
    usable: bool = True
    truncated: bool = False


def parse_reply(content: str, message: PlannedMessage, *, cut: bool = False) -> Reply:
    """The review in `content` (see `workers.review.answers`), each comment anchored
    to the line it names when the message showed that line; an answer with no
    readable review is an unusable `Reply` that holds none of its text.

    An answer cut off (`cut`: the provider said `finish_reason: length`; or its JSON
    never closed) is usable only when complete comments were rescued from it: a
    summary alone, written before the model ran out of room for its findings, would
    read as "nothing found"."""
    found = extract(content)
    partial = cut or found.truncated
    if not found.usable or (partial and not found.comments):
        return Reply(summary="", comments=(), usable=False)
    shown = new_side_text(message.text) if message.kind == "diff" else {}
    comments: list[ReviewComment] = []
    loose: list[str] = []
    for item in found.comments:
        placed = _anchor(item, message.files, shown)
        if placed is not None:
            comments.append(placed)
        else:
            where = f"{item.path}:{item.line}" if item.path and item.line else item.path
            loose.append(f"{code_span(where)}: {item.body}" if where else item.body)
    return Reply(
        summary=found.summary,
        comments=tuple(comments),
        unanchored=tuple(loose),
        truncated=partial,
    )


def _anchor(
    item: Found, files: Iterable[str], shown: Mapping[str, Mapping[int, str]]
) -> ReviewComment | None:
    """The comment on the line (or range) the answer named, if the message showed it.

    An answer that named no number but quoted the line's code is placed on the one
    shown line with that code; never on a line the answer did not name."""
    where = _resolve(item.path, files)
    lines = shown.get(where, {}) if where is not None else {}
    if where is None or not lines:
        return None
    line = item.line
    if line is None and item.code is not None:
        wanted = item.code.strip().lstrip("+").strip()
        matches = [n for n, text in lines.items() if wanted and text.strip() == wanted]
        line = matches[0] if len(matches) == 1 else None
    if line is None or line not in lines:
        return None
    start = item.start_line
    if start is not None and not all(n in lines for n in range(start, line + 1)):
        start = None
    return ReviewComment(path=where, line=line, body=item.body, start_line=start)


def _resolve(path: str, files: Iterable[str]) -> str | None:
    """The message's file a model meant: exact, or with a stray `b/`, `./` or `/`."""
    names = set(files)
    path = path.strip().rstrip(":")  # `src/app.py:`, as YAML answers leave it
    for candidate in (path, path.removeprefix("b/"), path.removeprefix("./"), path.lstrip("/")):
        if candidate in names:
            return candidate
    return None


def gather(
    ref: PullRequestRef,
    plan: ReviewPlan,
    replies: Mapping[int, Reply],
    failed: Mapping[int, str],
    *,
    stale: bool = False,
    max_comments: int = DEFAULT_MAX_COMMENTS,
    max_comment_chars: int = DEFAULT_MAX_COMMENT_CHARS,
) -> Review:
    """One review from every message's outcome, keyed by `PlannedMessage.index`.

    Comments are deduplicated, capped at `max_comments` (see `_capped` for which stay)
    and sorted by path and line (stable, so a model's order survives among equals).
    Every piece of model text is made safe and cut to `max_comment_chars` (a summary
    to `_SUMMARY_CHARS`). The body says what was reviewed, what was not and why, and
    how many comments were left out: a review that silently covers half a PR reads
    as approval of the rest.
    """
    failed = {i: why for i, why in failed.items() if i not in replies}
    comments, left_out = _capped(replies, max_comments, max_comment_chars)
    loose, loose_total = _loose(replies, min(max_comments, _LISTED), max_comment_chars)
    sections = [
        _stale_note(ref) if stale else "",
        f"> **Large pull request.** {plan.note}" if plan.note else "",
        _summaries(plan, replies),
        _cut_note(plan, replies),
        _left_out_note(left_out, max_comments),
        _listing("Remarks not tied to a changed line", loose, total=loose_total, collapse=False),
        _listing(
            "Only summarised",
            [code_span(p) for p in plan.summarised]
            + [f"{code_span(s.path)}: {s.reason}" for s in plan.summarised_data],
        ),
        _listing("Skipped", [f"{code_span(s.path)}: {s.reason}" for s in plan.skipped]),
        _listing("Not reviewed", _missing(plan, replies, failed), collapse=False),
    ]
    body = "\n\n".join(s for s in sections if s) or _nothing_said(plan, replies, comments)
    if len(body) > _BODY_CHARS:
        body = body[: _BODY_CHARS - 40] + "\n\n… (review body truncated)"
    return Review(
        pr=ref.id,
        head_sha=ref.head_sha,
        summary=body,
        comments=tuple(sorted(comments, key=lambda c: (c.path, c.line))),
        messages_done=len(replies),
        messages_failed=len(failed),
        stale=stale,
    )


def _capped(replies: Mapping[int, Reply], cap: int, chars: int) -> tuple[list[ReviewComment], int]:
    """At most `cap` distinct comments, made safe, and how many more there were.

    They are taken in turns, each message's first, then each one's second, and so on,
    in the model's order within a message. Not the first in path order: a model that
    one file's text talks into flooding the review would crowd out everything the
    other messages found, and the files late in the alphabet would never get any.
    Within a message the model's order stands, since models put what matters first.
    """
    seen: set[ReviewComment] = set()
    queues: list[list[ReviewComment]] = []
    for i in sorted(replies):
        mine = [c for c in dict.fromkeys(replies[i].comments) if c not in seen]
        seen.update(mine)
        queues.append(mine)
    turns = (c for turn in itertools.zip_longest(*queues) for c in turn if c is not None)
    kept: dict[ReviewComment, None] = {}
    taken = 0
    for comment in turns:
        if len(kept) >= cap:
            break
        taken += 1
        body = safe_markdown(comment.body, chars)
        if body:
            kept.setdefault(comment.model_copy(update={"body": body}), None)
    return list(kept), len(seen) - taken


def _nothing_said(
    plan: ReviewPlan, replies: Mapping[int, Reply], comments: list[ReviewComment]
) -> str:
    """The body when no section has anything: "No reviewable changes." only when there
    was nothing to review, never after a model answered."""
    if comments:
        return "See the line comments."
    if replies:
        return "No problems found in the reviewed changes."
    return "No reviewable changes." if not plan.messages else "Nothing was reviewed."


def _cut_note(plan: ReviewPlan, replies: Mapping[int, Reply]) -> str:
    """Which answers were cut off at the model's length limit: their later comments
    are missing, and a review that does not say so reads as complete."""
    planned = {m.index: m for m in plan.messages}
    cut = [_label(i, planned.get(i)) for i in sorted(replies) if replies[i].truncated]
    if not cut:
        return ""
    return (
        f"> **Answer cut short.** The model's answer for {', '.join(cut)} stopped at its "
        "length limit: the comments it finished are posted, any after them are missing."
    )


def _left_out_note(count: int, cap: int) -> str:
    if count <= 0:
        return ""
    return (
        f"> **{count} more line comment(s) not posted.** A review carries at most {cap}; "
        "each part of the pull request kept its first ones."
    )


def _stale_note(ref: PullRequestRef) -> str:
    return (
        f"> **Stale.** This review is of commit {ref.head_sha[:12]}; the pull request has "
        "moved on since, so some comments may point at code that changed."
    )


def _label(index: int, message: PlannedMessage | None) -> str:
    """What one message covered; a plan stored without its messages still gets numbers."""
    if message is None:
        return f"message {index + 1}"
    if message.kind == "summary":
        return f"summary of {len(message.files)} file(s)"
    if message.part is not None:
        return f"{code_span(message.files[0])}, part {message.part[0]} of {message.part[1]}"
    shown = message.files if len(message.files) <= _NAMED + 1 else message.files[:_NAMED]
    names = ", ".join(code_span(f) for f in shown)
    more = len(message.files) - len(shown)
    return names + (f" and {more} more files" if more else "")


def _summaries(plan: ReviewPlan, replies: Mapping[int, Reply]) -> str:
    """One message's summary as is; several as a list labelled by what each covered."""
    planned = {m.index: m for m in plan.messages}
    done = [(i, safe_markdown(replies[i].summary, _SUMMARY_CHARS)) for i in sorted(replies)]
    done = [(i, s) for i, s in done if s]
    if len(done) == 1 and len(replies) == 1 and len(plan.messages) <= 1:
        return done[0][1]
    return "\n".join(f"- **{_label(i, planned.get(i))}**: {s}" for i, s in done)


def _loose(replies: Mapping[int, Reply], shown: int, chars: int) -> tuple[list[str], int]:
    """The first `shown` remarks not tied to a line, made safe, and how many there are."""
    rows = list(dict.fromkeys(r for i in sorted(replies) for r in replies[i].unanchored))
    return [safe_markdown(r, chars) for r in rows[:shown]], len(rows)


def listed(count: int, limit: int) -> int:
    """How many of `count` rows a list shows by name under a `limit`: all of them when
    only one is over, since "… and 1 more" would take the place of that one name."""
    return count if count <= limit + 1 else limit


def _missing(
    plan: ReviewPlan, replies: Mapping[int, Reply], failed: Mapping[int, str]
) -> list[str]:
    """Failed messages with their reason, and planned ones with no outcome at all."""
    planned = {m.index: m for m in plan.messages}
    unknown = {i: "no reply was recorded" for i in planned if i not in replies}
    reasons = {i: author_reason(why) for i, why in {**unknown, **failed}.items()}
    return [
        f"message {i + 1} ({_label(i, planned[i])}): {why}"
        if i in planned
        else f"message {i + 1}: {why}"
        for i, why in sorted(reasons.items())
    ]


def author_reason(why: str) -> str:
    """What the PR's author reads for a message that failed with `why`."""
    low = why.lower()
    return next((said for key, said in _FOR_AUTHORS if key in low), _OTHERWISE)


def _listing(
    title: str, rows: list[str], *, collapse: bool = True, total: int | None = None
) -> str:
    """A titled list; long ones folded into `<details>` and cut at `_LISTED` rows.
    `total` counts rows the caller has already left out of `rows`."""
    count = len(rows) if total is None else total
    if count <= 0:
        return ""
    shown = [f"- {r}" for r in rows[: listed(count, _LISTED)]]
    if count > len(shown):
        shown.append(f"- … and {count - len(shown)} more")
    heading = f"**{title} ({count})**"
    if collapse and count > _COLLAPSE:
        return f"<details><summary>{heading}</summary>\n\n" + "\n".join(shown) + "\n\n</details>"
    return heading + "\n\n" + "\n".join(shown)
