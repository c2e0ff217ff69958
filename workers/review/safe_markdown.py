"""Model text made safe to post as Markdown under reviewq's account.

A model's reply is steered by the diff it reads, and the diff is the PR author's: so
anything the model writes may be written by whoever opened the PR. Posted as it
stands, it could notify any user or team (`@name`, `@org/team`), load a tracking
pixel (`![](url)`, `<img>`, `<video>`...), or offer a ```` ```suggestion ```` the
author applies with one click as if reviewq had proposed it.

Safety here must not depend on guessing how GitHub or GitLab will parse the text,
because inline Markdown is full of traps (a backtick inside a link destination, raw
HTML or a math span changes which backticks pair up). So the only text left exactly
as written is fenced code blocks, and those are rewritten in a form no renderer can
read otherwise: at column 0, after a blank line, fenced by more backticks than any
run inside, always closed, with an info string that names a language or nothing.
Everywhere else, inline code spans included, a ZERO WIDTH SPACE goes where it breaks
the syntax without changing what a reader sees (Dependabot's `@&#8203;name`):

- after an `@` (or `&#64;`) that starts a mention; an `@` inside a word, as in an
  email address, is left alone, since forges do not read it as a mention;
- after a `<` that starts an HTML tag, comment or autolink, so no raw HTML renders;
- between `!` and `[`, so no Markdown image renders;
- inside every run of three backticks or tildes, so no other code fence opens (one
  inside a list or quote could be a suggestion).

On top of that, images and media tags outside inline code are replaced by their alt
text and a visible note, so a reader knows something was there.
"""

from __future__ import annotations

import re

__all__ = ["ZWSP", "code_span", "safe_markdown"]

ZWSP = "\u200b"
_CUT = "\n\n… _(truncated)_"
MIN_LIMIT = 64

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_OPEN = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_LANGUAGE = re.compile(r"[A-Za-z0-9_+#.-]{1,40}")
# Info strings that make a forge render the block as something other than code: a
# suggestion the author applies in one click, or a diagram or map drawn from the text.
_RENDERED = ("suggestion", "mermaid", "geojson", "topojson", "stl")

# The safety passes; each inserts ZWSP only where it breaks syntax, so a second pass
# finds nothing to do.
_FENCE_RUN = re.compile(r"(``|~~)(?=[`~])")
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_IMAGE_START = re.compile(r"!(?=\[)")
_MENTION = re.compile(r"(?<![A-Za-z0-9])(@|&commat;|&#0*64;|&#[xX]0*40;)(?=[A-Za-z0-9_.\\&-])")

# Cosmetic passes, outside what looks like inline code: say an image was there.
_TICKS = re.compile(r"`+")
# Possessive quantifiers: a line of spaces after `![a](u` must not cost quadratic time.
_IMAGE = re.compile(
    r"!\[(?P<alt>(?:[^\[\]\\\n]|\\.|\[[^\[\]\n]*+\])*+)\]"
    r"(?:(?P<inline>\((?:[^()\s]|\([^()\s]*+\))*+"
    r"(?:\s++(?:\"[^\"\n]*+\"|'[^'\n]*+'|\([^()\n]*+\)))?+\s*+\))|\[(?P<label>[^\[\]\n]*+)\])?"
)
_DEFINITION = re.compile(r"^ {0,3}\[(?P<label>[^\[\]\n]+)\]:", re.MULTILINE)
_MEDIA = re.compile(
    r"<(?P<close>/?)\s*(?P<tag>img|image|picture|source|video|audio|track|iframe|frame|"
    r"frameset|object|embed|svg|portal|link|meta|base|style|script|input|form)"
    r"(?![A-Za-z0-9-])(?P<attrs>(?:[^>\"']|\"[^\"]*\"|'[^']*')*)>?",
    re.IGNORECASE,
)
_ALT = re.compile(r"""\balt\s*=\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\s>]+))""", re.I)
_IMAGES = {"img", "image"}
_EMBEDS = {"video", "audio", "iframe", "frame", "object", "embed", "svg", "portal"}


def safe_markdown(text: str, limit: int) -> str:
    """`text` made safe to post (see the module doc), at most `limit` characters.

    A longer text is cut before it is made safe, never after (a cut could open a code
    block), and ends with a note that it was cut. Only `limit` characters of the text
    are ever read, so a model's 100,000-character reply costs what a short one does.
    """
    if limit < MIN_LIMIT:
        raise ValueError(f"limit must be at least {MIN_LIMIT}")
    text = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n")).strip()
    if len(text) <= limit:
        out = _clean(text)
        if len(out) <= limit:
            return out
    room = limit - len(_CUT)
    cut = min(len(text), room)
    while cut > 0:
        out = _clean(text[:cut])
        if len(out) <= room:
            return out + _CUT
        # Making it safe added characters: cut in proportion, a round or two at most.
        cut = min(cut - 1, cut * room // len(out))
    return _CUT.strip()


def code_span(text: str) -> str:
    """`text` (a path, say) as one line of inline code that shows it as it is.

    Backticks inside become U+02CB, a look-alike, so the span always closes where it
    should; and the text is neutralised like any other: a path is the PR author's text.
    """
    flat = " ".join(text.split("\n")).replace("`", "\u02cb").strip() or "\u02cb\u02cb"
    return f"`{_neutralise(flat)}`"


def _clean(text: str) -> str:
    """Fenced blocks rewritten, everything between them made inert."""
    lines = text.split("\n")
    out: list[str] = []
    prose: list[str] = []
    i = 0
    while i < len(lines):
        opener = _OPEN.match(lines[i])
        if opener is None or (opener["fence"][0] == "`" and "`" in opener["info"]):
            prose.append(lines[i])
            i += 1
            continue
        out += _prose(prose)
        prose = []
        block, i = _fenced(lines, i, opener)
        if block and out and out[-1].strip():
            out.append("")
        out += block
    out += _prose(prose)
    return "\n".join(out).strip("\n")


def _fenced(lines: list[str], i: int, opener: re.Match[str]) -> tuple[list[str], int]:
    """The block opened at `lines[i]`, in canonical form, and the index after it.

    As CommonMark reads it: content runs to a closing fence of the same character, at
    least as long, indented at most three spaces, or to the end; the opener's
    indentation is taken off each content line.
    """
    indent, fence = len(opener["indent"]), opener["fence"]
    closer = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
    content: list[str] = []
    i += 1
    while i < len(lines) and not closer.match(lines[i]):
        line = lines[i]
        content.append(line[min(indent, len(line) - len(line.lstrip(" "))) :])
        i += 1
    if i >= len(lines) and not any(line.strip() for line in content):
        return [], i  # a stray fence line at the very end: an empty block says nothing
    longest = max((len(m) for line in content for m in _TICKS.findall(line)), default=0)
    ticks = "`" * max(3, longest + 1)
    return [ticks + _language(opener["info"]), *content, ticks], i + 1


def _language(info: str) -> str:
    """The info string's first word if it names a language; nothing that a forge would
    render (a suggestion, a diagram) and nothing with entities or backticks in it."""
    words = info.split()
    word = words[0] if words else ""
    if not _LANGUAGE.fullmatch(word) or word.lower().startswith(_RENDERED):
        return ""
    return word


def _prose(lines: list[str]) -> list[str]:
    """Lines outside fenced blocks: notes for images, then everything made inert."""
    if not lines:
        return []
    text = "\n".join(lines)
    labels = {_label(m["label"]) for m in _DEFINITION.finditer(text)}
    shown = "\n".join(_outside_code(line, labels) for line in lines)
    return _neutralise(shown).split("\n")


def _neutralise(text: str) -> str:
    text = _FENCE_RUN.sub(lambda m: m[1] + ZWSP, text)
    text = _TAG_START.sub("<" + ZWSP, text)
    text = _IMAGE_START.sub("!" + ZWSP, text)
    return _MENTION.sub(lambda m: m[1] + ZWSP, text)


def _outside_code(line: str, labels: set[str]) -> str:
    """Images and media tags replaced by notes, except in what looks like inline code
    (a run of backticks closed by one as long on the same line). A wrong guess here
    only changes how a note reads: `_neutralise` makes the whole line safe anyway."""
    parts: list[str] = []
    at = search = 0
    unclosed: set[int] = set()  # run lengths with no closer further on: linear time
    while (run := _TICKS.search(line, search)) is not None:
        search = run.end()
        if len(run[0]) in unclosed:
            continue
        close = re.compile(rf"(?<!`){run[0]}(?!`)").search(line, run.end())
        if close is None:
            unclosed.add(len(run[0]))
            continue
        parts += [_notes(line[at : run.start()], labels), line[run.start() : close.end()]]
        at = search = close.end()
    parts.append(_notes(line[at:], labels))
    return "".join(parts)


def _notes(text: str, labels: set[str]) -> str:
    return _MEDIA.sub(_media_note, _IMAGE.sub(lambda m: _image_note(m, labels), text))


def _image_note(match: re.Match[str], labels: set[str]) -> str:
    """`![alt](url)` always; `![alt][ref]`, `![alt][]` and `![alt]` only when a
    definition makes them an image (else they are just text, made inert anyway)."""
    alt = match["alt"]
    ref = match["label"] or alt
    if match["inline"] is None and _label(ref) not in labels:
        return match[0]
    return _removed("image", alt)


def _media_note(match: re.Match[str]) -> str:
    """An image or embed tag becomes a note; its companions (`<source>`, closing
    tags, `<link>`, `<script>`...) just go, so one `<picture>` makes one note."""
    tag = match["tag"].lower()
    if match["close"] or (tag not in _IMAGES and tag not in _EMBEDS):
        return ""
    if tag in _EMBEDS:
        return _removed("embedded content", "")
    alt = _ALT.search(match["attrs"] or "")
    return _removed("image", (alt["dq"] or alt["sq"] or alt["bare"] or "") if alt else "")


def _removed(what: str, alt: str) -> str:
    alt = " ".join(alt.split())
    return f"\\[{what} removed: {alt}\\]" if alt else f"\\[{what} removed\\]"


def _label(text: str) -> str:
    return " ".join(text.split()).casefold()
