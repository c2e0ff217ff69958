"""README and docs/ point only at things that exist: files, headings and commands.

A reader who follows a link to a moved file, or types a `reviewq ...` command the docs
show, must not meet a 404 or "No such command". Every relative link in README.md and
docs/**/*.md must resolve (and its `#anchor` name a heading of the target, as GitHub
spells heading ids); every `reviewq` command shown in a code span or a shell block must
exist, with every `--option` it shows, and its `--help` must succeed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from scheduler.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
_FENCE = re.compile(r"^\s*(```|~~~)")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")
_SPAN = re.compile(r"`([^`]+)`")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_WORD = re.compile(r"^[a-z][a-z0-9-]*$")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _prose(text: str) -> Iterator[tuple[int, str]]:
    """Lines outside fenced code blocks, with their numbers."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def _shell_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines inside ```bash / ```sh / ```console blocks."""
    shell = fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        match = _FENCE.match(line)
        if match:
            fenced = not fenced
            lang = line.strip()[3:].strip().lower()
            shell = fenced and lang in {"bash", "sh", "shell", "console"}
            continue
        if shell:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's heading id: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in {"L", "N"})
    return kept.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, line in _prose(path.read_text("utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def links(path: Path) -> Iterator[tuple[int, str]]:
    for number, line in _prose(path.read_text("utf-8")):
        without_code = _SPAN.sub("", line)
        for match in _LINK.finditer(without_code):
            yield number, match.group(1) or match.group(2)


def _broken(path: Path, target: str) -> str | None:
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
        return None
    file_part, _, anchor = target.partition("#")
    dest = (path.parent / file_part).resolve() if file_part else path
    if not dest.exists():
        return f"{file_part} does not exist"
    if ROOT not in dest.parents and dest != ROOT:
        return f"{file_part} is outside the repository"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        return f"#{anchor} is not a heading of {_rel(dest)}"
    return None


@pytest.mark.parametrize("path", DOCS, ids=_rel)
def test_every_relative_link_resolves(path: Path) -> None:
    problems = [
        f"{_rel(path)}:{number}: ({target}) {why}"
        for number, target in links(path)
        if (why := _broken(path, target)) is not None
    ]
    assert not problems, "\n".join(problems)


def commands(path: Path) -> Iterator[tuple[int, str]]:
    """`reviewq ...` as shown in code spans, and on the lines of shell blocks."""
    text = path.read_text("utf-8")
    for number, line in _prose(text):
        for span in _SPAN.findall(line):
            if span.startswith("reviewq "):
                yield number, span
    for number, line in _shell_lines(text):
        for part in re.split(r"&&|\||;", line.split(" #", 1)[0]):
            words = part.split()
            if "reviewq" in words:
                yield number, " ".join(words[words.index("reviewq") :])


def _resolve(command: str) -> tuple[list[str], click.Command, list[str]]:
    """The subcommand path, the command it names, and the options shown after it."""
    tokens = re.sub(r"[\[\]{}|]", " ", command).split()[1:]
    cmd: click.Command = main
    names: list[str] = []
    rest = list(tokens)
    while isinstance(cmd, click.Group) and rest and _WORD.match(rest[0]):
        sub = cmd.commands.get(rest[0])
        if sub is None:
            raise LookupError(f"no command {' '.join(['reviewq', *names, rest[0]])!r}")
        names.append(rest.pop(0))
        cmd = sub
    options = [t.split("=", 1)[0] for t in rest if t.startswith("--")]
    return names, cmd, options


def _shown_commands() -> list[tuple[str, str]]:
    return [(f"{_rel(p)}:{n}", c) for p in DOCS for n, c in commands(p)]


@pytest.mark.parametrize(("where", "command"), _shown_commands())
def test_every_command_shown_exists(where: str, command: str) -> None:
    try:
        names, cmd, options = _resolve(command)
    except LookupError as exc:
        pytest.fail(f"{where}: `{command}`: {exc}")
    known = {opt for param in cmd.params for opt in (*param.opts, *param.secondary_opts)}
    unknown = [o for o in options if o not in known | {"--help"}]
    assert not unknown, f"{where}: `{command}`: reviewq {' '.join(names)} has no {unknown}"
    result = CliRunner().invoke(main, [*names, "--help"])
    assert result.exit_code == 0, f"{where}: `{command}`: --help failed:\n{result.output}"


def test_the_checks_see_what_they_check() -> None:
    """The parsers find links, anchors and commands at all (a regex that matched
    nothing would pass every test above)."""
    readme = ROOT / "README.md"
    assert any(t.startswith("docs/") for _, t in links(readme))
    assert any("#" in t for p in DOCS for _, t in links(p))
    shown = [c for _, c in commands(readme)]
    assert any(c.startswith("reviewq accounts close-circuit") for c in shown)
    assert _resolve("reviewq accounts test --json")[0] == ["accounts", "test"]
    with pytest.raises(LookupError):
        _resolve("reviewq acounts test")
    assert slug("Before the first PR: `reviewq accounts test`") == (
        "before-the-first-pr-reviewq-accounts-test"
    )
    assert slug("Redis topologies: single, Sentinel, Cluster") == (
        "redis-topologies-single-sentinel-cluster"
    )
