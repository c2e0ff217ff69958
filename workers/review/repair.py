"""Decoding the JSON a model meant, from the JSON it wrote.

Models write JSON the way people do: a literal newline or tab inside a string,
single quotes, trailing commas, `//` and `#` comments, curly quotes, Python's
`True`/`None`, unquoted keys, and, when `max_tokens` runs out, no ending at all.
`json.loads` refuses every one of these, and each refusal used to put raw model
text in front of a pull request's author. `loads_lenient` repairs that damage in
one string-aware pass, and for an answer cut off mid-way keeps only the values
that were complete (the comments written in full, never half of one).

It is a leaf: it knows nothing of reviews, only of text that looks like JSON.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

__all__ = ["Decoded", "loads_lenient"]

_STRICT = json.JSONDecoder()
_LOOSE = json.JSONDecoder(strict=False)  # literal control characters inside strings
_OPENERS = {"{": "}", "[": "]"}
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "\u201d": "\u201d"}
_ESCAPES = frozenset('"\\/bfnrtu')
_WORDS = {"True": "true", "False": "false", "None": "null"}
_BARE = re.compile(r"[A-Za-z_$][\w$-]*")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")


@dataclass(frozen=True, slots=True)
class Decoded:
    """A decoded value; `repaired` says the text was not JSON as written, `truncated`
    that it ended before its last bracket closed (values after the cut are gone)."""

    value: object
    repaired: bool = False
    truncated: bool = False


def loads_lenient(text: str, start: int = 0) -> Decoded | None:
    """The JSON value that starts at `text[start]` (`{` or `[`), as written when it is
    valid, else repaired; None when even the repair yields nothing."""
    for decoder in (_STRICT, _LOOSE):
        try:
            value, _end = decoder.raw_decode(text, start)
            return Decoded(value, repaired=decoder is _LOOSE)
        except ValueError:
            continue
    fixed = _Repairer(text, start).run()
    if fixed is None:
        return None
    try:
        value, _end = _LOOSE.raw_decode(fixed.text)
    except ValueError:
        return None
    return Decoded(value, repaired=True, truncated=fixed.truncated)


@dataclass
class _Fixed:
    text: str
    truncated: bool


@dataclass
class _Repairer:
    """One pass over `source` from `pos`, writing strict JSON to `out`.

    `stack` holds the open brackets. `safe` is the last point where the output could
    be closed and still hold only complete values: after an element of an array, or
    after a member of the outermost object. A cut-off answer is closed there."""

    source: str
    pos: int
    out: list[str] = field(default_factory=list)
    stack: list[str] = field(default_factory=list)
    safe: tuple[int, tuple[str, ...]] | None = None

    def run(self) -> _Fixed | None:
        if self.source[self.pos : self.pos + 1] not in _OPENERS:
            return None
        while self.pos < len(self.source):
            if not self._step():
                break
            if not self.stack:
                return _Fixed(self._joined(), truncated=False)
        return self._closed()

    def _joined(self) -> str:
        return "".join(self.out)

    def _drop_trailing_comma(self) -> None:
        """`[1, 2,]` and `{"a": 1,}`: the comma before a closer goes."""
        i = len(self.out) - 1
        while i >= 0 and self.out[i].isspace():
            i -= 1
        if i >= 0 and self.out[i] == ",":
            del self.out[i]

    def _closed(self) -> _Fixed | None:
        """The output cut back to its last safe point, brackets closed."""
        if self.safe is None:
            return None
        length, stack = self.safe
        del self.out[length:]
        self._drop_trailing_comma()
        text = self._joined().rstrip()
        return _Fixed(text + "".join(_OPENERS[b] for b in reversed(stack)), truncated=True)

    def _mark_value_done(self) -> None:
        """A safe point: after an array's element, or after an object's member when no
        array encloses it (so a comment object is kept whole or not at all)."""
        if self.stack and (self.stack[-1] == "[" or "[" not in self.stack):
            self.safe = (len(self.out), tuple(self.stack))

    def _step(self) -> bool:
        """Read one token; False when the text can be read no further."""
        ch = self.source[self.pos]
        if ch in _OPENERS:
            self.stack.append(ch)
            self.out.append(ch)
            self.pos += 1
        elif ch in "}]":
            return self._close(ch)
        elif ch in _QUOTES:
            return self._string(ch)
        elif ch in ",:" or ch.isspace():
            self.out.append(ch)
            self.pos += 1
        elif self.source.startswith(("//", "#"), self.pos):
            end = self.source.find("\n", self.pos)
            self.pos = len(self.source) if end < 0 else end
        elif self.source.startswith("/*", self.pos):
            end = self.source.find("*/", self.pos + 2)
            self.pos = len(self.source) if end < 0 else end + 2
        else:
            return self._bare()
        return True

    def _close(self, ch: str) -> bool:
        if not self.stack or _OPENERS[self.stack[-1]] != ch:
            return False  # a stray closer: the text stops making sense here
        self.stack.pop()
        self._drop_trailing_comma()
        self.out.append(ch)
        self.pos += 1
        self._mark_value_done()
        return True

    def _string(self, quote: str) -> bool:
        """A string in any quotes, written back in double quotes; False if unterminated."""
        closer, i, chars = _QUOTES[quote], self.pos + 1, []
        key = self._expecting_key()
        while i < len(self.source):
            ch = self.source[i]
            if ch == "\\" and i + 1 < len(self.source):
                nxt = self.source[i + 1]
                chars.append(nxt if nxt == "'" else ("\\" if nxt in _ESCAPES else "\\\\") + nxt)
                i += 2
                continue
            if ch == closer and self._closes(i + 1, key):
                break
            chars.append('\\"' if ch == '"' else ch)
            i += 1
        else:
            return False
        self.pos = i + 1
        self.out.append('"' + "".join(chars) + '"')
        if not self._is_key():
            self._mark_value_done()
        return True

    def _closes(self, after: int, key: bool) -> bool:
        """Whether a quote ends its string: only if what follows can follow it (`:`
        after a key; `,` `}` `]` or the end after a value). Otherwise it is a quote
        the model forgot to escape (`"body": "use "x" here"`), and part of the text."""
        rest = self.source[after : after + 200].lstrip()
        if not rest or rest.startswith(("//", "/*", "#")):
            return True
        return rest[0] in (":" if key else ",}]")

    def _expecting_key(self) -> bool:
        """Inside an object, after its `{` or a `,`: the next string is a key."""
        if not self.stack or self.stack[-1] != "{":
            return False
        last = next((t for t in reversed(self.out) if not t.isspace()), "")
        return last in ("{", ",")

    def _is_key(self) -> bool:
        rest = self.source[self.pos :].lstrip()
        return bool(self.stack) and self.stack[-1] == "{" and rest.startswith(":")

    def _ends_value(self) -> bool:
        """An unquoted word is a string value only when a `,`, a closer or the line's
        end follows it (`{key: value}`); in the middle of prose it is not."""
        rest = self.source[self.pos :]
        stripped = rest.lstrip(" \t")
        return not stripped or stripped[0] in ",}]\r\n"

    def _bare(self) -> bool:
        """A number, literal or unquoted key; anything else ends the readable text."""
        if match := _NUMBER.match(self.source, self.pos):
            self.out.append(match[0])
        elif match := _BARE.match(self.source, self.pos):
            word = match[0]
            self.pos = match.end()
            if self._is_key():
                self.out.append(json.dumps(word))
                return True
            literal = _WORDS.get(word, word if word in ("true", "false", "null") else None)
            if literal is None and not self._ends_value():
                return False
            self.out.append(literal if literal is not None else json.dumps(word))
            self._mark_value_done()
            return True
        else:
            return False
        self.pos = match.end()
        self._mark_value_done()
        return True
