"""Finding the review in a model's answer, whatever shape the model gave it.

The prompt asks for `{"summary": ..., "comments": [{"path", "line", "body"}]}`, and
models answer with that, or with it in a fence, after a `<think>` block that holds a
draft, as YAML, under other key names (`fileName`/`details`, `reviewComment`,
`issue_content`, pr-agent's `relevant file`/`suggestion`), with a line range, or cut
off by `max_tokens`. `extract` reads all of these into `Found` items; what it cannot
read it reports as unusable, so the caller retries or fails the message. It never
hands back the answer's raw text: only strings taken out of a structure the model
built go on to a review.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import yaml

from workers.review.repair import Decoded, loads_lenient

__all__ = ["Extracted", "Found", "extract"]

_THINK = re.compile(r"<(think|thinking|reasoning|analysis)>.*?</\1>", re.DOTALL | re.IGNORECASE)
_THINK_OPEN = re.compile(r"<(think|thinking|reasoning|analysis)>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</(think|thinking|reasoning|analysis)>", re.IGNORECASE)
_FENCE = re.compile(r"```[A-Za-z]*[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_RANGE = re.compile(r"^\s*L?(\d+)\s*(?:[-\u2013:]|to|\.\.)\s*L?(\d+)\s*$")
_ALIAS = re.compile(r"(?m)(?:^|[\s:\-\[,])[&*][A-Za-z0-9_]")  # YAML anchors: billion laughs
_YAML_KEY = re.compile(r"^(?:- )?[A-Za-z_][\w ]*:(?:\s|$)")
_PLAIN = re.compile(r"^(\s*(?:- )?)([A-Za-z_][\w ]*): (?![|>'\"\[{&*!])(.+)$")
_MAX_CANDIDATES = 100
_DEPTH = 4  # how deep a review's list may sit inside the answer

# What models call the parts of a review, as seen in real answers (see
# tests/fixtures/model_answers/SOURCES.md). Keys are compared lowercased, with `_`,
# `-` and spaces removed, so `file_name`, `fileName` and `file name` are one key.
_PATH_KEYS = ("path", "file", "filename", "filepath", "relevantfile", "newpath", "location")
_BODY_KEYS = (
    "body", "comment", "message", "details", "detail", "reviewcomment", "issuecontent",
    "suggestion", "suggestioncontent", "description", "explanation", "issue", "problem",
    "text", "content", "feedback", "recommendation", "note", "remark", "finding",
)  # fmt: skip
_TITLE_KEYS = ("title", "topic", "summary", "onesentencesummary", "category", "label")
_SEVERITY_KEYS = ("severity", "priority", "level", "importance")
_LINE_KEYS = ("line", "linenumber", "endline", "newline", "lineno", "lines", "linerange")
_START_KEYS = ("startline", "fromline", "linestart")
_CODE_KEYS = ("relevantline", "existingcode", "code", "snippet", "codeline")
_SUMMARY_KEYS = (
    "summary", "overview", "generalsuggestions", "reviewsummary", "overallsummary",
    "overall", "prsummary", "general", "verdict", "assessment",
)  # fmt: skip
_LIST_KEYS = (
    "comments", "reviewcomments", "review", "reviews", "findings", "issues",
    "codefeedback", "codesuggestions", "suggestions", "feedback", "problems", "results",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Found:
    """One comment as the answer gave it: `line` is the last line it names (None when it
    named none), `start_line` the first of a range; `code` the line's text, if quoted."""

    path: str
    line: int | None
    body: str
    start_line: int | None = None
    code: str | None = None


@dataclass(frozen=True, slots=True)
class Extracted:
    """What an answer held. `usable` is False when no review could be read in it at
    all (the caller retries, then fails the message); `truncated` when it was cut off
    and only its complete comments were kept; `repaired` when it was not valid JSON."""

    summary: str
    comments: tuple[Found, ...]
    usable: bool
    truncated: bool = False
    repaired: bool = False


def strip_reasoning(content: str) -> str:
    """The answer without reasoning blocks: a closed block goes, and text before a
    lone closing tag is reasoning too (some providers drop the opening one); an
    opening tag never closed leaves only what came before it."""
    text = _THINK.sub("", content)
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end() :]
    opened = _THINK_OPEN.search(text)
    if opened:
        text = text[: opened.start()]
    return text.strip()


def extract(content: str) -> Extracted:
    """The review in `content`: the first JSON (or YAML) value that reads as one."""
    text = strip_reasoning(content)
    unusable = Extracted(summary="", comments=(), usable=False)
    for decoded in _candidates(text):
        review = _review(decoded.value)
        if review is not None:
            summary, found = review
            return Extracted(summary, found, True, decoded.truncated, decoded.repaired)
    return unusable


def _candidates(text: str) -> Iterator[Decoded]:
    """Decoded values, best guesses first: fenced blocks, then every `{` or `[` in
    order, then the fences and the whole text read as YAML."""
    if text.startswith('"'):  # the whole review as a JSON string: one more decode
        inner = loads_lenient(f"[{text}]")
        if inner is not None and isinstance(inner.value, list) and inner.value:
            text = str(inner.value[0]) if isinstance(inner.value[0], str) else text
    fences = [m[1] for m in _FENCE.finditer(text)]
    seen = 0
    for block in (*fences, text):
        for start in (m.start() for m in re.finditer(r"[{\[]", block)):
            if seen >= _MAX_CANDIDATES:
                return
            seen += 1
            decoded = loads_lenient(block, start)
            if decoded is not None:
                yield decoded
    for block in (*fences, text):
        value = _yaml(block)
        if value is not None:
            yield Decoded(value, repaired=True)


def _yaml(text: str) -> object | None:
    """YAML, as pr-agent's prompts ask for and some models answer anyway, as written or
    with the damage models do to it mended (see `_mended`); never with anchors or
    aliases (`*a` expanded a million times is an answer's worth of bytes)."""
    if _ALIAS.search(text) or ":" not in text:
        return None
    for variant in (text, _mended(text), _scalars(_mended(text))):
        try:
            value = yaml.safe_load(variant)
        except yaml.YAMLError:
            continue
        if isinstance(value, dict | list):
            return value
    return None


def _mended(text: str) -> str:
    """The YAML in `text`: prose before its first key and a fence after it cut off,
    a `{`...`}` wrapper dropped, tab indents made spaces, and the `+` of a diff line
    pasted into a block dropped (as pr-agent's `try_fix_yaml` mends them)."""
    lines = text.replace("\r\n", "\n").split("\n")
    start = next((i for i, line in enumerate(lines) if _YAML_KEY.match(line)), 0)
    lines = lines[start:]
    end = next((i for i, line in enumerate(lines) if line.startswith("```")), len(lines))
    lines = lines[:end]
    if lines and lines[-1].strip() == "}":
        lines.pop()
    lines = [re.sub(r"^\t+", lambda m: "    " * len(m[0]), line) for line in lines]
    return "\n".join(re.sub(r"^\+", " ", line) for line in lines)


def _scalars(text: str) -> str:
    """Every plain `key: value` made a block scalar: a model's value with `: ` or `#`
    in it (`relevant line: user=\"\"\"PR Info: aaa`) is text, not YAML structure."""

    def block(m: re.Match[str]) -> str:
        lead, key, value = m[1], m[2], m[3]
        return f"{lead}{key}: |-\n{' ' * (len(lead) + 2)}{value}"

    return "\n".join(_PLAIN.sub(block, line) for line in text.split("\n"))


def _key(name: object) -> str:
    return re.sub(r"[\s_\-]", "", str(name)).lower()


def _get(item: Mapping[str, object], keys: tuple[str, ...]) -> object | None:
    """The first of `keys` the mapping has, under any spelling, with a value."""
    index = {_key(k): v for k, v in item.items()}
    for key in keys:
        value = index.get(key)
        if value not in (None, "", [], {}):
            return value
    return None


def _review(value: object, depth: int = 0) -> tuple[str, tuple[Found, ...]] | None:
    """(summary, comments) when `value` is a review: a mapping with a summary or a
    list of comments (possibly a level or two down), or a bare list of comments."""
    if depth > _DEPTH:
        return None
    if isinstance(value, list):
        found = _comments(value)
        return ("", found) if found or (value == [] and depth > 0) else None
    if not isinstance(value, Mapping):
        return None
    summary = _text(_get(value, _SUMMARY_KEYS))
    lists = [v for k, v in value.items() if _key(k) in _LIST_KEYS and isinstance(v, list)]
    comments = tuple(c for items in lists for c in _comments(items))
    if summary or comments or (lists and not any(lists)):
        return summary, comments  # an empty list is an answer; a list we cannot read is not
    if depth == 0 and (one := _comment(value)) is not None and one.path:
        return "", (one,)
    for inner in value.values():
        if isinstance(inner, dict | list) and (deeper := _review(inner, depth + 1)) is not None:
            return deeper
    return None


def _text(value: object) -> str:
    """A summary: text, or the texts of a list; a nested object is not one."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return "\n".join(f"- {v.strip()}" for v in value if isinstance(v, str) and v.strip())
    return ""


def _comments(items: list[object]) -> tuple[Found, ...]:
    return tuple(found for item in items if (found := _comment(item)) is not None)


def _comment(item: object) -> Found | None:
    """One comment under any of the key names models use; None without a body."""
    if not isinstance(item, Mapping):
        return None
    body = _text(_get(item, _BODY_KEYS))
    title = _text(_get(item, _TITLE_KEYS))
    if not body:
        body, title = title, ""
    if not body:
        return None
    severity = _get(item, _SEVERITY_KEYS)
    lead = " ".join(
        p for p in (f"[{severity}]" if isinstance(severity, str | int) else "", title) if p
    )
    if lead:
        body = f"**{lead}**: {body}"
    path = _get(item, _PATH_KEYS)
    start, line = _lines(item)
    code = _get(item, _CODE_KEYS)
    return Found(
        path=path.strip() if isinstance(path, str) else "",
        line=line,
        body=body,
        start_line=start,
        code=code.strip("\n") if isinstance(code, str) and code.strip() else None,
    )


def _lines(item: Mapping[str, object]) -> tuple[int | None, int | None]:
    """(first, last) line named: `line`, `line: "12-15"`, `start_line`/`end_line`,
    `lines: [12, 15]`; a single line gives (None, line)."""
    raw = _get(item, _LINE_KEYS)
    start = _number(_get(item, _START_KEYS))
    if isinstance(raw, list) and raw:
        start, raw = _number(raw[0]), raw[-1]
    if isinstance(raw, str) and (match := _RANGE.match(raw)):
        start, raw = int(match[1]), int(match[2])
    end = _number(raw)
    if end is None and start is not None:
        end, start = start, None
    if start is not None and end is not None and not 0 < start < end:
        start = None
    return start, end


def _number(value: object) -> int | None:
    if isinstance(value, str) and value.strip().lstrip("L").isdigit():
        value = int(value.strip().lstrip("L"))
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if type(value) is int and value >= 1 else None
