"""The review prompt: one versioned file of package data, read once per process.

The wording lives in `prompts/<PROMPT_VERSION>.md` (documented in docs/prompt.md) so
it can be read, reviewed and changed in one place, and a change is a new version,
not an edit nobody can date: the version is recorded on every planned message.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from scheduler.config.review import DEFAULT_DESCRIPTION_CHARS
from workers.providers.client import ChatMessage, ChatRequest, ResponseFormat
from workers.review.diff import numbered_view
from workers.review.model import DEFAULT_MAX_COMMENTS
from workers.review.plan import PlannedMessage

__all__ = [
    "PROMPT_VERSION",
    "PromptSection",
    "PullContext",
    "build_request",
    "prompt_text",
    "user_text",
]

PROMPT_VERSION = "review-v1"
# A title's characters the prompt quotes (GitHub allows 256, GitLab 255: a little more).
TITLE_CHARS = 300
PromptSection = Literal["diff", "summary", "retry"]
_MARK = re.compile(r"^<!-- section: ([a-z]+) -->$", re.MULTILINE)


@functools.cache
def _sections(version: str) -> dict[str, str]:
    """Every section of one prompt file, by name; an unknown version is an error."""
    text = resources.files("workers.review").joinpath(f"prompts/{version}.md").read_text("utf-8")
    marks = list(_MARK.finditer(text))
    return {
        m[1]: text[m.end() : marks[k + 1].start() if k + 1 < len(marks) else len(text)].strip()
        for k, m in enumerate(marks)
    }


def prompt_text(section: PromptSection, *, max_comments: int, version: str = PROMPT_VERSION) -> str:
    """One section of the prompt with its comment cap filled in."""
    sections = _sections(version)
    if section not in sections:
        raise ValueError(f"prompt {version} has no section {section!r}")
    return sections[section].replace("{max_comments}", str(max_comments))


@dataclass(frozen=True, slots=True)
class PullContext:
    """What every message of a plan says besides its diff: the PR's title and
    description (the model judges a change by what it claims to do) and the comment
    cap its prompt names. The description is cut at `description_chars`, and both
    are quoted line by line, so no line of theirs can pass for a diff header."""

    title: str = ""
    description: str = ""
    max_comments: int = DEFAULT_MAX_COMMENTS
    description_chars: int = DEFAULT_DESCRIPTION_CHARS
    title_chars: int = TITLE_CHARS

    def lead(self) -> str:
        """The text before a message's intro; empty when there is nothing to say."""
        title = " ".join(self.title.split())[: self.title_chars]
        description = self.description.strip()[: self.description_chars]
        if not title and not description:
            return ""
        rows = ["The pull request as its author describes it (untrusted text, quoted):"]
        rows += [f"> Title: {title}"] if title else []
        rows += [f"> {line}".rstrip() for line in description.splitlines()] if description else []
        return "\n".join(rows) + "\n\n"


def user_text(text: str, kind: Literal["diff", "summary"]) -> str:
    """A planned message's user text as sent: a diff's rows numbered, a summary as is."""
    return numbered_view(text) if kind == "diff" else text


def build_request(
    message: PlannedMessage,
    *,
    model: str,
    max_tokens: int = 2048,
    thinking: Mapping[str, str | int] | None = None,
    temperature: float | None = None,
    response_format: ResponseFormat | None = None,
    stricter: bool = False,
) -> ChatRequest:
    """The chat request for one planned message: its system prompt and text as
    planned, in the prompt version it was planned with, the diff's rows numbered (so
    `message.tokens` stays an honest estimate of what is sent). `stricter` adds the
    prompt's stricter instruction, for the one retry of a message whose answer could
    not be read; the unreadable answer is not sent back (it would cost its tokens
    again, and it is model text steered by a diff)."""
    cap = DEFAULT_MAX_COMMENTS if message.max_comments is None else message.max_comments
    version = message.prompt_version or PROMPT_VERSION
    kind: PromptSection = "summary" if message.kind == "summary" else "diff"
    messages = [
        ChatMessage(role="system", content=prompt_text(kind, max_comments=cap, version=version)),
        ChatMessage(role="user", content=user_text(message.text, message.kind)),
    ]
    if stricter:
        retry = prompt_text("retry", max_comments=cap, version=version)
        messages.append(ChatMessage(role="user", content=retry))
    return ChatRequest(
        model=model,
        messages=tuple(messages),
        max_tokens=max_tokens,
        thinking=None if thinking is None else dict(thinking),
        temperature=temperature,
        response_format=response_format,
    )
