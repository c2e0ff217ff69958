"""A deterministic stand-in for the model: review comments derived from the diff alone.

The same request always yields the same review, so a pipeline test can assert what
gets posted; and every comment sits on a line that exists on the new side of a hunk,
so a test can also check that line mapping survives chunking.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Hunk", "completion", "estimate_tokens", "parse_diff", "review_content", "user_text"]

_NEW_FILE = re.compile(r"^\+\+\+ (?:b/)?(?P<path>.+?)(?:\t.*)?\s*$")
_HUNK = re.compile(r"^@@ -\d+(?:,(?P<old>\d+))? \+(?P<start>\d+)(?:,(?P<new>\d+))? @@")
_MAX_COMMENTS = 20
_PHRASES = (
    "Is this change covered by a test? A case for line {line} would pin it down.",
    "Consider naming the intent here; `{snippet}` reads as an implementation detail.",
    "Check the edge cases of `{snippet}`: empty input and errors.",
    "This line changed behaviour; make sure callers of `{path}` expect it.",
)


@dataclass
class Hunk:
    """One hunk's new-side lines: `added` holds `(line number, text)` of `+` lines."""

    path: str
    start: int
    length: int
    added: list[tuple[int, str]] = field(default_factory=list)
    removed: int = 0


def parse_diff(text: str) -> list[Hunk]:
    """Unified-diff hunks anywhere in `text` (prose and code fences around are fine).

    Hunk bodies are read by their declared line counts, so a removed line that starts
    with `--` is not mistaken for a file header; a hunk that ends early leaves the line
    that ended it to be read again, so a miscounted hunk cannot swallow the next one.
    """
    hunks: list[Hunk] = []
    path: str | None = None
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line, i = lines[i], i + 1
        if match := _NEW_FILE.match(line):
            found = match["path"]
            path = None if found == "/dev/null" else found
        elif (match := _HUNK.match(line)) and path is not None:
            hunk = Hunk(path, int(match["start"]), int(match["new"] or 1))
            i = _read_hunk(hunk, lines, i, int(match["old"] or 1))
            hunks.append(hunk)
    return hunks


def _read_hunk(hunk: Hunk, lines: list[str], i: int, old: int) -> int:
    """Fill `hunk` from `lines[i:]`; returns the index of the first line not used."""
    number, new = hunk.start, hunk.length
    while (old > 0 or new > 0) and i < len(lines):
        tag = lines[i][:1]
        if tag == "+" and new > 0:
            hunk.added.append((number, lines[i][1:]))
            number, new = number + 1, new - 1
        elif tag == "-" and old > 0:
            hunk.removed, old = hunk.removed + 1, old - 1
        elif tag in (" ", "") and old > 0 and new > 0:
            number, old, new = number + 1, old - 1, new - 1
        elif tag != "\\":
            return i  # the hunk ended early: keep what was read
        i += 1
    return i


def review_content(text: str) -> str:
    """The JSON string a reviewing model is asked to return."""
    hunks = parse_diff(text)
    comments: list[dict[str, Any]] = []
    for hunk in hunks:
        if not hunk.added or len(comments) >= _MAX_COMMENTS:
            continue
        line, body = next(((n, t) for n, t in hunk.added if t.strip()), hunk.added[0])
        comments.append({"path": hunk.path, "line": line, "body": _phrase(hunk.path, line, body)})
    files = len({h.path for h in hunks})
    added = sum(len(h.added) for h in hunks)
    removed = sum(h.removed for h in hunks)
    if hunks:
        summary = (
            f"Reviewed {files} file(s) in {len(hunks)} hunk(s): {added} line(s) added, "
            f"{removed} removed; {len(comments)} comment(s)."
        )
    else:
        summary = "No unified diff found in the request; nothing to review."
    return json.dumps({"comments": comments, "summary": summary})


def _phrase(path: str, line: int, text: str) -> str:
    """A stable choice of wording: a hash, not a random draw, so reruns match."""
    digest = hashlib.sha256(f"{path}\0{line}\0{text}".encode()).digest()
    snippet = " ".join(text.split())[:60] or "(blank line)"
    template = _PHRASES[digest[0] % len(_PHRASES)]
    return template.format(line=line, snippet=snippet, path=path)


def _text_of(content: object) -> str:
    """A message's text: a string, or OpenAI-style list of `{"text": ...}` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (p.get("text") for p in content if isinstance(p, Mapping))
        return "".join(t for t in texts if isinstance(t, str))
    return ""


def user_text(messages: Sequence[Any]) -> str:
    """Every user message's text: the diff to review is in there somewhere."""
    return "\n".join(
        _text_of(m.get("content"))
        for m in messages
        if isinstance(m, Mapping) and m.get("role") == "user"
    )


def estimate_tokens(text: str) -> int:
    """About four characters a token: close enough to settle a usage estimate."""
    return math.ceil(len(text) / 4)


def completion(
    model: str, messages: Sequence[Any], *, created: int, completion_id: str
) -> dict[str, Any]:
    """An OpenAI chat completion carrying the review and an estimated `usage`."""
    content = review_content(user_text(messages))
    prompt = sum(
        estimate_tokens(_text_of(m.get("content"))) for m in messages if isinstance(m, Mapping)
    )
    completion_tokens = estimate_tokens(content)
    return {
        "id": f"chatcmpl-sandbox-{completion_id}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        },
    }
