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
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from scheduler.state.refs import PullRequestRef
from workers.review.diff import new_side_lines
from workers.review.model import (
    DEFAULT_MAX_COMMENT_CHARS,
    DEFAULT_MAX_COMMENTS,
    Review,
    ReviewComment,
)
from workers.review.plan import PlannedMessage, ReviewPlan
from workers.review.safe_markdown import code_span, safe_markdown

__all__ = ["Reply", "gather", "parse_reply"]

_FENCE = re.compile(r"```[A-Za-z]*[ \t]*\n(.*?)```", re.DOTALL)
_SUMMARY_CHARS = 4000  # one message's summary in the review body
_REASON_CHARS = 1000  # why a message failed: a provider's words may quote the diff
_LISTED = 200  # files listed per section of the review body
_COLLAPSE = 10  # longer lists go inside <details>
_BODY_CHARS = 65_000  # GitHub refuses review bodies over 65,536 characters


class Reply(BaseModel):
    """One message's answer: `unanchored` holds remarks whose path or line was not in
    the diff the model saw; they go into the review body instead of failing it."""

    model_config = ConfigDict(frozen=True)

    summary: str
    comments: tuple[ReviewComment, ...]
    unanchored: tuple[str, ...] = ()


def parse_reply(content: str, message: PlannedMessage) -> Reply:
    """The JSON in `content` (bare, fenced, or amid prose); anything else becomes the
    summary as is, so a model that ignores the format still gets read."""
    data = _find_json(content)
    if data is None:
        return Reply(summary=_trim(content, _SUMMARY_CHARS), comments=())
    summary = data.get("summary")
    anchors = new_side_lines(message.text)
    comments: list[ReviewComment] = []
    loose: list[str] = []
    raw = data.get("comments")
    for item in raw if isinstance(raw, list) else ():
        found = _comment(item)
        if found is None:
            continue
        path, line, body = found
        where = _resolve(path, message.files)
        if where is not None and line is not None and line in anchors.get(where, ()):
            comments.append(ReviewComment(path=where, line=line, body=body))
        else:
            loose.append(f"{code_span(f'{path}:{line}')}: {body}" if path and line else body)
    text = summary.strip() if isinstance(summary, str) else ""
    return Reply(summary=text, comments=tuple(comments), unanchored=tuple(loose))


def _find_json(content: str) -> dict[str, Any] | None:
    """The first object that looks like a review (`summary` or `comments`); a bare list
    is taken as the comments."""
    candidates = [content.strip(), *(m[1].strip() for m in _FENCE.finditer(content))]
    decoder = json.JSONDecoder()
    starts = [m.start() for m in re.finditer(r"[{\[]", content)][:100]
    for text, at in [*((c, 0) for c in candidates), *((content, s) for s in starts)]:
        try:
            value, _end = decoder.raw_decode(text, at)
        except ValueError:
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            return {"comments": value}
        if isinstance(value, dict) and ("summary" in value or "comments" in value):
            return value
    return None


def _comment(item: object) -> tuple[str, int | None, str] | None:
    """(path, line, body) of one comment; models say `file` or `comment` at times."""
    if not isinstance(item, dict):
        return None
    body = next((item[k] for k in ("body", "comment", "message") if item.get(k)), None)
    if not isinstance(body, str) or not body.strip():
        return None
    path = item.get("path", item.get("file"))
    line = item.get("line")
    if isinstance(line, str) and line.strip().isdigit():
        line = int(line)
    if isinstance(line, float) and line.is_integer():
        line = int(line)
    number = line if type(line) is int and line >= 1 else None
    return (path if isinstance(path, str) else ""), number, body.strip()


def _resolve(path: str, files: Iterable[str]) -> str | None:
    """The message's file a model meant: exact, or with a stray `b/`, `./` or `/`."""
    names = set(files)
    for candidate in (path, path.removeprefix("b/"), path.removeprefix("./"), path.lstrip("/")):
        if candidate in names:
            return candidate
    return None


def _trim(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


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
        _left_out_note(left_out, max_comments),
        _listing("Remarks not tied to a changed line", loose, total=loose_total, collapse=False),
        _listing("Only summarised", [code_span(p) for p in plan.summarised]),
        _listing("Skipped", [f"{code_span(s.path)}: {s.reason}" for s in plan.skipped]),
        _listing("Not reviewed", _missing(plan, replies, failed), collapse=False),
    ]
    body = "\n\n".join(s for s in sections if s) or "No reviewable changes."
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


def _left_out_note(count: int, cap: int) -> str:
    if count <= 0:
        return ""
    return (
        f"> **{count} more line comment(s) not posted.** A review carries at most {cap} "
        "(`[review] max_comments`); each part of the pull request kept its first ones."
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
    names = ", ".join(code_span(f) for f in message.files[:3])
    more = len(message.files) - 3
    return names + (f" and {more} more" if more > 0 else "")


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


def _missing(
    plan: ReviewPlan, replies: Mapping[int, Reply], failed: Mapping[int, str]
) -> list[str]:
    """Failed messages with their reason, and planned ones with no outcome at all."""
    planned = {m.index: m for m in plan.messages}
    unknown = {i: "no reply was recorded" for i in planned if i not in replies}
    reasons = {i: safe_markdown(why, _REASON_CHARS) for i, why in {**unknown, **failed}.items()}
    return [
        f"message {i + 1} ({_label(i, planned[i])}): {why}"
        if i in planned
        else f"message {i + 1}: {why}"
        for i, why in sorted(reasons.items())
    ]


def _listing(
    title: str, rows: list[str], *, collapse: bool = True, total: int | None = None
) -> str:
    """A titled list; long ones folded into `<details>` and cut at `_LISTED` rows.
    `total` counts rows the caller has already left out of `rows`."""
    count = len(rows) if total is None else total
    if count <= 0:
        return ""
    shown = [f"- {r}" for r in rows[:_LISTED]]
    if count > len(shown):
        shown.append(f"- … and {count - len(shown)} more")
    heading = f"**{title} ({count})**"
    if collapse and count > _COLLAPSE:
        return f"<details><summary>{heading}</summary>\n\n" + "\n".join(shown) + "\n\n</details>"
    return heading + "\n\n" + "\n".join(shown)
