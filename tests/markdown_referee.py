"""An independent reader of what reviewq posts: a CommonMark parser (markdown-it-py,
which `rich` already brings in), with GFM tables and strikethrough.

It shares no code with `workers.review.safe_markdown`, so a test that asks it what a forge
would render checks the filter against a real parser, not against its own idea of
Markdown.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from markdown_it import MarkdownIt
from markdown_it.token import Token

_MD = MarkdownIt("commonmark").enable(["table", "strikethrough"])
# GitHub: `(?:^|\W)@name`; GitLab also takes `_`, `.` and `-` after the `@`. Entities
# are decoded in markdown-it's text tokens, so `&#64;name` is checked as `@name`.
_MENTION = re.compile(r"(?:^|[^A-Za-z0-9_])@[A-Za-z0-9_.-]")
_RENDERED = ("suggestion", "mermaid", "geojson", "topojson", "stl")


def hazards(text: str) -> list[str]:
    """What in `text` would notify someone, load something or offer a one-click change
    if posted; an empty list when nothing would."""
    found: list[str] = []
    _walk(_MD.parse(text), found)
    return found


def _walk(tokens: Sequence[Token], found: list[str]) -> None:
    for token in tokens:
        if token.type in ("image", "html_inline", "html_block"):
            found.append(f"{token.type}: {token.content!r}")
        elif token.type == "fence" and token.info.strip().lower().startswith(_RENDERED):
            found.append(f"fence: {token.info!r}")
        elif token.type == "text" and _MENTION.search(token.content):
            found.append(f"mention: {token.content!r}")
        if token.children:
            _walk(token.children, found)


def code_blocks(text: str) -> list[str]:
    """The content of every fenced code block, as the parser reads it."""
    return [t.content for t in _MD.parse(text) if t.type == "fence"]
