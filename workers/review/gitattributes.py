"""A repository's `.gitattributes`, read the way git reads it, for the skip rules.

A repository says which of its files are generated (`linguist-generated`), vendored
(`linguist-vendored`) or not worth a diff (`-diff`, `binary`) in `.gitattributes`;
GitHub collapses those files in its own diff view, and Linguist
(lib/linguist/lazy_blob.rb, github-linguist/linguist v9.6.0-36-gb45dbe9b2) lets these
attributes overrule its heuristics both ways: `linguist-generated=false` makes a file
hand-written whatever its name. The rules followed here are gitattributes(5):

- a line is a pattern and attributes: `attr` sets, `-attr` unsets, `attr=value` gives
  a value, `!attr` returns it to unspecified; `#` starts a comment line;
- the pattern follows .gitignore's rules, except that negative patterns (`!x`) are
  not allowed (git ignores the line) and a pattern ending in `/` names a directory,
  which never matches a file (git's own advice: write `dir/**`);
- a pattern without `/` matches a file name at any depth below the file's directory;
  otherwise it is anchored there, `*` stays within one path component, a leading
  `**/` matches in all directories, a trailing `/**` matches everything inside, and
  `/**/` matches zero or more directories;
- later lines win over earlier ones, and a deeper `.gitattributes` over the root's;
- `[attr]name ...` defines a macro (root file only); `binary` is `-diff -merge -text`.

The text is hostile input: lines over git's own limit (2048 bytes) are ignored as git
ignores them, and matching is a linear-time automaton, never a backtracking regex, so
no pattern can make a lookup slow.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import cast

__all__ = [
    "MAX_LINE_BYTES",
    "AttrValue",
    "GitAttributes",
    "linguist_flag",
    "parse_gitattributes",
]

# git's ATTR_MAX_LINE_LENGTH (attr.c): longer lines are ignored with a warning.
MAX_LINE_BYTES = 2048
# Set (True), unset (False) or a value; an unspecified attribute is simply absent.
AttrValue = bool | str
_BUILTIN_MACROS: Mapping[str, tuple[tuple[str, AttrValue | None], ...]] = {
    "binary": (("diff", False), ("merge", False), ("text", False)),
}
_ATTR_NAME = re.compile(r"^[A-Za-z0-9_.][-A-Za-z0-9_.]*$")

# A compiled pattern is a tuple of tokens: (kind, payload).
#   "lit" one character; "one" any character but "/"; "class" a bracket expression;
#   "star" any run within a component; "all" anything, "/" included; "dirs" zero or
#   more whole directories (always followed by a "lit" "/", which it may skip with it).
_Token = tuple[str, object]


@dataclass(frozen=True, slots=True)
class _Rule:
    base: str  # the directory of the .gitattributes file, "" for the root
    basename_only: bool
    tokens: tuple[_Token, ...]
    attrs: tuple[tuple[str, AttrValue | None], ...]


@dataclass(frozen=True)
class GitAttributes:
    """Every rule of a repository's .gitattributes files, lowest precedence first."""

    rules: tuple[_Rule, ...] = ()
    errors: tuple[str, ...] = field(default=(), compare=False)

    def lookup(self, path: str) -> dict[str, AttrValue]:
        """The attributes git gives `path` (a repository-relative file path)."""
        state: dict[str, AttrValue | None] = {}
        for rule in self.rules:
            if _rule_matches(rule, path):
                state.update(rule.attrs)
        return {name: value for name, value in state.items() if value is not None}

    def merged(self, other: GitAttributes) -> GitAttributes:
        """`other`'s rules after these: a deeper file's rules win over the root's."""
        return GitAttributes(self.rules + other.rules, self.errors + other.errors)


def linguist_flag(attrs: Mapping[str, AttrValue], name: str) -> bool | None:
    """Linguist's reading of a boolean attribute (lazy_blob.rb `boolean_attribute`):
    unspecified is None (the heuristics decide), unset or the string "false" is False,
    anything else (set, or any other value) True."""
    if name not in attrs:
        return None
    value = attrs[name]
    return value is not False and value != "false"


def parse_gitattributes(text: str, *, base: str = "") -> GitAttributes:
    """The rules of one `.gitattributes` file found in directory `base` ("" = root).

    Bad lines are left out and described in `errors`, as git warns and goes on; a
    whole repository's attributes are the root's `merged` with each deeper file's."""
    known = dict(_BUILTIN_MACROS)
    rules: list[_Rule] = []
    errors: list[str] = []
    base = base.strip("/")
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if len(raw.encode("utf-8", "replace")) > MAX_LINE_BYTES:
            errors.append(f"line {number}: longer than {MAX_LINE_BYTES} bytes, ignored")
            continue
        pattern, rest = _split_pattern(line)
        if pattern.startswith("[attr]"):
            name = pattern[len("[attr]") :]
            if base or not _ATTR_NAME.match(name):
                errors.append(f"line {number}: macro {name!r} not allowed here, ignored")
            else:
                known[name] = tuple(_expand(rest, known))
            continue
        rule = _rule(pattern, rest, base, known)
        if isinstance(rule, str):
            errors.append(f"line {number}: {rule}")
        elif rule is not None:
            rules.append(rule)
    return GitAttributes(tuple(rules), tuple(errors))


def _split_pattern(line: str) -> tuple[str, list[str]]:
    """The pattern (C-quoted or not) and the attribute words after it."""
    if line.startswith('"'):
        end = 1
        while end < len(line) and line[end] != '"':
            end += 2 if line[end] == "\\" else 1
        quoted, rest = line[1:end], line[end + 1 :]
        try:
            pattern = quoted.encode("latin-1", "backslashreplace").decode("unicode_escape")
        except UnicodeDecodeError:
            pattern = quoted
        return pattern, rest.split()
    parts = line.split()
    return parts[0], parts[1:]


def _expand(
    words: Iterable[str], macros: Mapping[str, tuple[tuple[str, AttrValue | None], ...]]
) -> list[tuple[str, AttrValue | None]]:
    out: list[tuple[str, AttrValue | None]] = []
    for word in words:
        value: AttrValue | None
        if word.startswith("-"):
            name, value = word[1:], False
        elif word.startswith("!"):
            name, value = word[1:], None
        elif "=" in word:
            name, _, text = word.partition("=")
            value = text
        else:
            name, value = word, True
        if not _ATTR_NAME.match(name):
            continue
        out.append((name, value))
        if name in macros and value is True:
            out.extend(macros[name])
    return out


def _rule(
    pattern: str,
    words: list[str],
    base: str,
    macros: Mapping[str, tuple[tuple[str, AttrValue | None], ...]],
) -> _Rule | str | None:
    if pattern.startswith("!"):
        return f"negative pattern {pattern!r} is forbidden in .gitattributes, ignored"
    attrs = tuple(_expand(words, macros))
    if not attrs or pattern.endswith("/"):
        return None  # nothing to set, or a directory pattern: never matches a file
    basename_only = "/" not in pattern
    return _Rule(base, basename_only, _compile(pattern.lstrip("/")), attrs)


def _compile(pattern: str) -> tuple[_Token, ...]:
    tokens: list[_Token] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i) and (i == 0 or pattern[i - 1] == "/"):
            tokens += [("dirs", None), ("lit", "/")]
            i += 3
        elif pattern.startswith("**", i) and i + 2 == len(pattern) and i > 0:
            tokens.append(("all", None) if pattern[i - 1] == "/" else ("star", None))
            i += 2
        elif char == "*":
            tokens.append(("star", None))
            i += 1
        elif char == "?":
            tokens.append(("one", None))
            i += 1
        elif char == "[" and (found := _bracket(pattern, i)) is not None:
            tokens.append(("class", found[0]))
            i = found[1]
        elif char == "\\" and i + 1 < len(pattern):
            tokens.append(("lit", pattern[i + 1]))
            i += 2
        else:
            tokens.append(("lit", char))
            i += 1
    return tuple(tokens)


def _bracket(pattern: str, start: int) -> tuple[tuple[bool, str], int] | None:
    """A bracket expression at `start`: ((negated, members), index after it), or None
    when it never closes (then `[` is an ordinary character, as in git)."""
    i = start + 1
    negated = i < len(pattern) and pattern[i] in "!^"
    i += negated
    members: list[str] = []
    first = True
    while i < len(pattern) and (pattern[i] != "]" or first):
        first = False
        if pattern[i] == "\\" and i + 1 < len(pattern):
            i += 1
        if i + 2 < len(pattern) and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            low, high = pattern[i], pattern[i + 2]
            members.extend(chr(c) for c in range(ord(low), min(ord(high), ord(low) + 4096) + 1))
            i += 3
        else:
            members.append(pattern[i])
            i += 1
    if i >= len(pattern):
        return None
    return (negated, "".join(members)), i + 1


def _rule_matches(rule: _Rule, path: str) -> bool:
    if rule.base:
        if not path.startswith(rule.base + "/"):
            return False
        path = path[len(rule.base) + 1 :]
    if rule.basename_only:
        path = path.rsplit("/", 1)[-1]
    return _match(rule.tokens, path)


def _match(tokens: tuple[_Token, ...], text: str) -> bool:
    """Simulate the pattern as a set of states over `text`: O(len(tokens) * len(text))."""
    states = _closure(tokens, {0})
    for char in text:
        after: set[int] = set()
        for i in states:
            if i == len(tokens):
                continue
            kind, payload = tokens[i]
            if kind in ("star", "all", "dirs"):
                if char != "/" or kind != "star":
                    after.add(i)
            elif _advances(kind, payload, char):
                after.add(i + 1)
        states = _closure(tokens, after)
        if not states:
            return False
    return len(tokens) in states


def _closure(tokens: tuple[_Token, ...], states: set[int]) -> set[int]:
    """States reachable without reading a character: past a `*`, `/**`, or `**/`."""
    todo, seen = list(states), set(states)
    while todo:
        i = todo.pop()
        if i < len(tokens) and tokens[i][0] in ("star", "all", "dirs"):
            for nxt in (i + 1, i + 2) if tokens[i][0] == "dirs" else (i + 1,):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
    return seen


def _advances(kind: str, payload: object, char: str) -> bool:
    """Whether a one-character token reads `char`."""
    if kind == "lit":
        return payload == char
    if char == "/":
        return False
    if kind == "one":
        return True
    negated, members = cast(tuple[bool, str], payload)
    return (char in members) != negated
