"""Reading diff text and model replies, and gathering the replies into one review.

Both kinds of text come from outside and are read the same careful way: a hunk body is
read by the line counts in its header (as `patch` and the provider simulator do), so a
removed line that starts with `--` is never taken for a file header. Replies are read
leniently, since models wrap JSON in fences and prose; and a comment is only anchored
to a line that is in the diff the model was shown, because GitHub rejects a whole
review (422) when one comment points outside the diff.

All model text reaches the `Review` through `gather`, which makes it safe to post
(`workers.safe_markdown`) and caps how many comments there are and how long each is:
a prompt-injected diff can make a model write anything, in any amount.

`workers.planning` re-exports this module's API; this module needs planning's types
only for annotations, so there is no import cycle.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from workers.changes import ChangedFile, FileStatus, PullRequestRef
from workers.review import (
    DEFAULT_MAX_COMMENT_CHARS,
    DEFAULT_MAX_COMMENTS,
    Review,
    ReviewComment,
)
from workers.safe_markdown import code_span, safe_markdown

if TYPE_CHECKING:
    from workers.planning import PlannedMessage, ReviewPlan

__all__ = ["Reply", "gather", "new_side_lines", "parse_reply", "parse_unified_diff"]

_HUNK = re.compile(r"^@@ -\d+(?:,(?P<old>\d+))? \+(?P<start>\d+)(?:,(?P<new>\d+))? @@")
_BINARY = re.compile(r"^Binary files (?P<old>.+) and (?P<new>.+) differ$")
_FENCE = re.compile(r"```[A-Za-z]*[ \t]*\n(.*?)```", re.DOTALL)
_SUMMARY_CHARS = 4000  # one message's summary in the review body
_REASON_CHARS = 1000  # why a message failed: a provider's words may quote the diff
_LISTED = 200  # files listed per section of the review body
_COLLAPSE = 10  # longer lists go inside <details>
_BODY_CHARS = 65_000  # GitHub refuses review bodies over 65,536 characters


def _read_counted(lines: list[str], i: int, old: int, new: int) -> tuple[list[str], int]:
    """A hunk body from `lines[i:]`, by its header's counts; returns it and the index
    after it. `\\ No newline` markers belong to the hunk, also right after its end."""
    body: list[str] = []
    while i < len(lines) and (old > 0 or new > 0 or lines[i].startswith("\\")):
        tag = lines[i][:1]
        if tag == "+" and new > 0:
            new -= 1
        elif tag == "-" and old > 0:
            old -= 1
        elif tag in (" ", "") and old > 0 and new > 0:
            old, new = old - 1, new - 1
        elif tag != "\\":
            break  # the hunk ended early: keep what was read
        body.append(lines[i])
        i += 1
    return body, i


def _counts(match: re.Match[str]) -> tuple[int, int]:
    return int(match["old"] or 1), int(match["new"] or 1)


def new_side_lines(text: str) -> dict[str, frozenset[int]]:
    """New-side numbers of every added or context line of every hunk in `text`, by the
    path of its `+++` header: the lines a review comment may be anchored to."""
    found: dict[str, set[int]] = {}
    path: str | None = None
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line, i = lines[i], i + 1
        if line.startswith("+++ "):
            path = _path(line[4:], "b/")
        elif path is not None and (match := _HUNK.match(line)):
            body, i = _read_counted(lines, i, *_counts(match))
            number = int(match["start"]) + (_counts(match)[1] == 0)
            for row in body:
                if row[:1] in (" ", "", "+"):
                    found.setdefault(path, set()).add(number)
                    number += 1
    return {p: frozenset(numbers) for p, numbers in found.items()}


def _path(raw: str, prefix: str) -> str | None:
    """A header's path: no timestamp (`diff -u`), unquoted, no `a/` or `b/`; None for
    /dev/null."""
    name = raw.split("\t", 1)[0].rstrip("\r")
    if len(name) >= 2 and name[0] == name[-1] == '"':  # git's C-style quoting
        try:
            escaped = name[1:-1].encode("latin-1").decode("unicode_escape")
            name = escaped.encode("latin-1").decode("utf-8")
        except UnicodeError:
            name = name[1:-1]
    if name == "/dev/null":
        return None
    return name.removeprefix(prefix)


def _git_names(rest: str) -> tuple[str | None, str | None]:
    """Both names of `diff --git a/x b/y`. Unquoted names may hold spaces; then the
    split where both halves name the same file wins (renames have `rename` lines)."""
    rest = rest.rstrip("\r")
    if two := re.fullmatch(r'("(?:[^"\\]|\\.)*"|\S+) ("(?:[^"\\]|\\.)*"|\S+)', rest):
        return _path(two[1], "a/"), _path(two[2], "b/")
    cuts = [i for i in range(len(rest)) if rest.startswith(" b/", i)]
    cut = next((i for i in cuts if rest[2:i] == rest[i + 3 :]), cuts[-1] if cuts else None)
    if cut is None:
        return None, None
    return _path(rest[:cut], "a/"), _path(rest[cut + 1 :], "b/")


@dataclass
class _Draft:
    """One file of a diff while it is read."""

    git: bool = False
    old: str | None = None
    new: str | None = None
    added: bool = False
    deleted: bool = False
    source: str | None = None
    copied: bool = False
    binary: bool = False
    headers: bool = False
    lines: list[str] = field(default_factory=list)

    def started(self) -> bool:
        return self.headers or self.binary or bool(self.lines)

    def extended(self, line: str) -> None:
        """git's extended header lines; anything else between files is ignored."""
        if line.startswith("new file mode"):
            self.added = True
        elif line.startswith("deleted file mode"):
            self.deleted = True
        elif line.startswith(("rename from ", "copy from ")):
            self.source = _path(line.split(" ", 2)[2], "")
            self.copied = line.startswith("copy")
        elif line.startswith(("rename to ", "copy to ")):
            self.new = _path(line.split(" ", 2)[2], "") or self.new
        elif line == "GIT binary patch":
            self.binary = True

    def result(self) -> ChangedFile | None:
        name = (self.old if self.deleted else self.new) or self.new or self.old
        if not name:
            return None
        first = self.lines[0] if self.lines else ""
        added = self.added or (not self.git and first.startswith("@@ -0,0 "))
        deleted = self.deleted or (not self.git and " +0,0 @@" in first)
        status: FileStatus = "removed" if deleted else "added" if added else "modified"
        if status == "modified" and self.source is not None:
            status = "copied" if self.copied else "renamed"
        plus = sum(1 for line in self.lines if line[:1] == "+")
        minus = sum(1 for line in self.lines if line[:1] == "-")
        return ChangedFile(
            filename=name,
            status=status,
            additions=0 if self.binary else plus,
            deletions=0 if self.binary else minus,
            changes=0 if self.binary else plus + minus,
            patch=None if self.binary else "\n".join(self.lines),
            previous_filename=self.source if status in ("renamed", "copied") else None,
        )


def parse_unified_diff(text: str) -> list[ChangedFile]:
    """Files of a `git diff` or `diff -u` (`-r`, `-N`) output, as GitHub lists them.

    Handles new, deleted, renamed, copied and binary files; `patch` holds the hunks
    only, from the first `@@`, and is None for a binary file. Text between files
    (`index` lines, `Only in` notes, mail headers) is ignored.
    """
    drafts: list[_Draft] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line, i = lines[i].rstrip("\r"), i + 1
        if line.startswith("diff --git "):
            old, new = _git_names(line[len("diff --git ") :])
            drafts.append(_Draft(git=True, old=old, new=new))
        elif line.startswith("--- ") and i < len(lines) and lines[i].startswith("+++ "):
            if not drafts or drafts[-1].started():
                drafts.append(_Draft())
            _set_names(drafts[-1], _path(line[4:], "a/"), _path(lines[i][4:], "b/"))
            i += 1
        elif match := _BINARY.match(line):
            if not drafts or drafts[-1].started():
                drafts.append(_Draft())
            drafts[-1].binary = True
            _set_names(drafts[-1], _path(match["old"], "a/"), _path(match["new"], "b/"))
        elif drafts and (match := _HUNK.match(line)):
            body, i = _read_counted(lines, i, *_counts(match))
            drafts[-1].lines += [line, *body]
        elif drafts:
            drafts[-1].extended(line)
    return [f for d in drafts if (f := d.result()) is not None]


def _set_names(draft: _Draft, old: str | None, new: str | None) -> None:
    """`/dev/null` on a side means the file is new (or gone); a git header's names stay
    when these are missing."""
    draft.headers = True
    draft.added |= old is None
    draft.deleted |= new is None
    draft.old, draft.new = old or draft.old, new or draft.new


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
