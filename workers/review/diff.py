"""Reading unified diff text: the files a diff changes, and the new-side line numbers a
review comment may be anchored to.

A hunk body is read by the line counts in its header (as `patch` and the provider
simulator do), so a removed line that starts with `--` is never taken for a file
header. It is a leaf: it knows nothing of planning or replies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from workers.review.changes import ChangedFile, FileStatus

__all__ = [
    "gutter_width",
    "new_side_lines",
    "new_side_text",
    "numbered_view",
    "parse_unified_diff",
]


_HUNK = re.compile(r"^@@ -\d+(?:,(?P<old>\d+))? \+(?P<start>\d+)(?:,(?P<new>\d+))? @@")
_BINARY = re.compile(r"^Binary files (?P<old>.+) and (?P<new>.+) differ$")


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
    return {p: frozenset(rows) for p, rows in new_side_text(text).items()}


def new_side_text(text: str) -> dict[str, dict[int, str]]:
    """Each added or context line of every hunk in `text` by its new-side number (its
    text without the tag), by the path of its `+++` header."""
    found: dict[str, dict[int, str]] = {}
    for path, rows in _hunk_rows(text):
        found.setdefault(path, {}).update((n, row[1:]) for n, row in rows if n is not None)
    return found


def _hunk_rows(text: str) -> list[tuple[str, list[tuple[int | None, str]]]]:
    """Every hunk of `text` with its path, each body row with its new-side number
    (None for a removed line or a `\\ No newline` marker)."""
    hunks: list[tuple[str, list[tuple[int | None, str]]]] = []
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
            rows: list[tuple[int | None, str]] = []
            for row in body:
                if row[:1] in (" ", "", "+"):
                    rows.append((number, row))
                    number += 1
                else:
                    rows.append((None, row))
            hunks.append((path, rows))
    return hunks


def numbered_view(text: str) -> str:
    """`text` with the new-side number printed before every line a comment may name.

    Each hunk body row becomes `<tag><number>| <code>`, the number right-aligned to the
    width of the hunk's largest (blank for a removed line), so the model reads the
    line number instead of counting from the `@@` header: counting is where answers
    went wrong, by using the old side or counting the header as line 1. The tag stays
    in column one and the header counts still hold, so the text is still read as a
    diff (the provider simulator reads it so). Every other line is kept as it is."""
    numbers: dict[int, tuple[int | None, int]] = {}
    lines = text.split("\n")
    path: str | None = None
    i = 0
    while i < len(lines):
        line, i = lines[i], i + 1
        if line.startswith("+++ "):
            path = _path(line[4:], "b/")
        elif path is not None and (match := _HUNK.match(line)):
            first = i
            body, i = _read_counted(lines, i, *_counts(match))
            number = int(match["start"]) + (_counts(match)[1] == 0)
            width = gutter_width(number, len(body)) - 2
            for k, row in enumerate(body):
                on_new = row[:1] in (" ", "", "+")
                numbers[first + k] = (number if on_new else None, width)
                number += on_new
    return "\n".join(
        _numbered(row, *numbers[k]) if k in numbers else row for k, row in enumerate(lines)
    )


def gutter_width(start: int, rows: int) -> int:
    """Characters `numbered_view` adds to each row of a hunk whose new side starts at
    `start` and has at most `rows` rows: the largest number's digits, `|` and a space."""
    return len(str(max(start + rows - 1, 1))) + 2


def _numbered(row: str, number: int | None, width: int) -> str:
    """`+    11| code`: the tag stays in column one, so the text is still a diff."""
    if row[:1] == "\\":
        return row
    gutter = f"{number:>{width}}| " if number is not None else " " * width + "| "
    return (row[:1] or " ") + gutter + row[1:]


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
