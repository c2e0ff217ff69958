"""Which changed files are worth review budget, and which matter most.

Every message sent to a provider spends a request out of a window the whole team
shares, so files no reviewer reads (lockfiles, generated code, vendored trees,
minified bundles) are left out before packing, and large machine-formatted data is
only summarised, each with the reason shown in the review. The rules are GitHub
Linguist's (`workers.review.linguist`), overruled by the repository's own
`.gitattributes` (`workers.review.gitattributes`) and by config globs. When a PR is
too large to review in full, `risk` decides which files still get a full review. All
of it is cheap and deterministic; docs/skiprules.md measures it on real PRs.
"""

from __future__ import annotations

import fnmatch
import math
import posixpath
import re
from collections.abc import Sequence
from typing import NamedTuple

from workers.review import linguist
from workers.review.changes import ChangedFile
from workers.review.datafiles import summarised_data
from workers.review.gitattributes import GitAttributes, linguist_flag
from workers.review.linguist import LOCKFILES

__all__ = [
    "HEADLINE_CHARS",
    "LOCKFILES",
    "Triage",
    "degraded_note",
    "headline",
    "matches_glob",
    "rank_by_risk",
    "risk",
    "skip_reason",
    "triage",
]

HEADLINE_CHARS = 300
_SECTION = re.compile(r"^@@ -\d+(?:,\d+)? \+\d+(?:,\d+)? @@ ?(.*)$", re.MULTILINE)
_TEST_DIRS = frozenset({"test", "tests", "spec", "specs", "__tests__", "testing", "e2e"})
_TEST_GLOBS = ("test_*", "*_test.*", "*.test.*", "*.spec.*", "*Test.java", "*Tests.cs")
_DOC_DIRS = frozenset({"doc", "docs", "documentation"})
_DOC_EXTENSIONS = frozenset({".md", ".markdown", ".rst", ".txt", ".adoc"})
_SENSITIVE = re.compile(
    r"auth|login|passw|secret|token|crypt|cipher|jwt|oauth|saml|session|cookie|csrf|"
    r"perm|acl|rbac|sql|migrat|schema|config|settings|secur|sanitiz|\.env|docker|"
    r"workflows|deploy|payment|billing",
    re.IGNORECASE,
)


class Triage(NamedTuple):
    """A PR's files sorted three ways: reviewed (in their given order), skipped (path,
    reason) and summarised (file, reason), the last two by path."""

    kept: list[ChangedFile]
    skipped: list[tuple[str, str]]
    summarised: list[tuple[ChangedFile, str]]


def triage(
    files: Sequence[ChangedFile],
    *,
    skip: Sequence[str] = (),
    keep: Sequence[str] = (),
    attributes: GitAttributes | None = None,
) -> Triage:
    """Skip what is not worth a request (`skip_reason`), then summarise large
    machine-formatted data (`workers.review.datafiles`) among what is left."""
    kept: list[ChangedFile] = []
    skipped: list[tuple[str, str]] = []
    for file in files:
        reason = skip_reason(file, skip=skip, keep=keep, attributes=attributes)
        if reason is None:
            kept.append(file)
        else:
            skipped.append((file.filename, reason))
    rescued = {
        f.filename
        for f in kept
        if any(matches_glob(f.filename, p) for p in keep)
        or _attribute(attributes, f.filename, "linguist-generated") is False
    }
    data = summarised_data([f for f in kept if f.filename not in rescued])
    kept = [f for f in kept if f.filename not in data]
    summarised = sorted(
        ((f, data[f.filename]) for f in files if f.filename in data),
        key=lambda pair: pair[0].filename,
    )
    return Triage(kept, sorted(skipped), summarised)


def rank_by_risk(
    files: Sequence[ChangedFile], full: int
) -> tuple[list[ChangedFile], list[ChangedFile]]:
    """(the `full` riskiest files, the rest): see `risk`; ties go by path, so the split
    is deterministic."""
    ranked = sorted(files, key=lambda f: (-risk(f), f.filename))
    return ranked[:full], ranked[full:]


def degraded_note(kept: int, full: int, limit: int | None) -> str:
    """What a degraded review tells its readers; it names `risk`'s factors, so the two
    live side by side."""
    return (
        f"This pull request changes {kept} reviewable files, more than the {limit} reviewq "
        f"reviews in full: only the {full} riskiest (source before tests and docs, sensitive "
        f"paths, bigger changes first) were reviewed line by line; {kept - full} were summarised."
    )


def matches_glob(path: str, pattern: str) -> bool:
    """fnmatch, case-sensitive, where `*` also crosses `/` (so `docs/**` is a subtree).

    A pattern without `/` also matches the file name alone (`Makefile` anywhere), and
    `**/x` also matches `x` at the root, as people expect from .gitignore habits.
    """
    if fnmatch.fnmatchcase(path, pattern):
        return True
    if "/" not in pattern:
        return fnmatch.fnmatchcase(posixpath.basename(path), pattern)
    return pattern.startswith("**/") and fnmatch.fnmatchcase(path, pattern[3:])


def skip_reason(
    file: ChangedFile,
    *,
    skip: Sequence[str] = (),
    keep: Sequence[str] = (),
    attributes: GitAttributes | None = None,
) -> str | None:
    """Why `file` gets no review budget, or None to review it.

    Order matters: what cannot be reviewed (deleted, binary, no patch) goes first;
    then explicit `skip` globs; `keep` globs overrule everything below them. Next the
    repository's own word in `.gitattributes` (parsed from the PR's head commit, when
    the caller has it): `-diff`, then `linguist-generated` and `linguist-vendored`,
    which also switch the matching heuristics off when false, as in Linguist. Last,
    Linguist's heuristics by name, directory and content (`workers.review.linguist`).
    """
    physical = _physical_reason(file)
    if physical is not None:
        return physical
    path = file.filename
    for pattern in skip:
        if matches_glob(path, pattern):
            return f"matched skip glob {pattern!r}"
    if any(matches_glob(path, pattern) for pattern in keep):
        return None
    attrs = attributes.lookup(path) if attributes is not None else {}
    if attrs.get("diff") in (False, "false"):
        return "marked -diff in .gitattributes"
    generated = linguist_flag(attrs, "linguist-generated")
    vendored = linguist_flag(attrs, "linguist-vendored")
    if generated:
        return "generated (linguist-generated in .gitattributes)"
    if vendored:
        return "vendored (linguist-vendored in .gitattributes)"
    return _default_reason(path, file.patch or "", generated is None, vendored is None)


def _attribute(attributes: GitAttributes | None, path: str, name: str) -> bool | None:
    return None if attributes is None else linguist_flag(attributes.lookup(path), name)


def _physical_reason(file: ChangedFile) -> str | None:
    """Files with nothing reviewable in them, whatever the config says."""
    if file.status == "removed":
        return "deleted"
    if file.withheld:
        return file.withheld
    if file.patch is None or not _SECTION.search(file.patch):
        if file.status in ("renamed", "copied", "unchanged") and file.changes == 0:
            return f"{file.status} without changes"
        if file.patch is not None:
            return "no content changes (no diff hunks)"
        if file.additions + file.deletions == 0:
            return "binary (no patch)"
        return "patch too large for the API (no patch)"
    return None


def _default_reason(path: str, patch: str, generated: bool, vendored: bool) -> str | None:
    """Linguist's heuristics; `generated`/`vendored` False when .gitattributes has
    turned that family off for this file."""
    # A lockfile in a test tree is a test's input, often written by hand to be wrong
    # (python-poetry/poetry#6753's `tests/fixtures/invalid_lock/poetry.lock`).
    if generated and linguist.is_lockfile(path) and not linguist.in_test_tree(path):
        return "lockfile"
    if vendored and linguist.vendored_path(path):
        return "vendored"
    if not generated:
        return None
    if linguist.generated_path(path):
        return "generated"
    view = linguist.PatchView.of(patch)
    if linguist.minified(path, view):
        return "minified"
    if linguist.generated_banner(path, view):
        return "generated"
    if linguist.pip_compile_output(path, view):
        return "generated (pip-compile output)"
    return None


def risk(file: ChangedFile) -> float:
    """How much a full review of `file` is worth when not every file can have one.

    `kind * sensitivity * size`, so no single factor decides alone:
    - kind: source code 1.0, tests 0.5, docs 0.25 (a bug ships from source);
    - sensitivity: 2.0 when the path mentions auth, crypto, sessions, SQL, migrations,
      config, CI or deployment, where a mistake costs most; else 1.0;
    - size: log2(2 + additions + 2 * deletions): bigger changes hide more, and removed
      code can break callers the diff does not show, so a deletion weighs double.
    """
    path = file.filename
    sensitivity = 2.0 if _SENSITIVE.search(path) else 1.0
    size = math.log2(2 + file.additions + 2 * file.deletions)
    return _kind_weight(path) * sensitivity * size


def _kind_weight(path: str) -> float:
    name = posixpath.basename(path)
    dirs = {part.lower() for part in path.split("/")[:-1]}
    if dirs & _TEST_DIRS or any(fnmatch.fnmatchcase(name, g) for g in _TEST_GLOBS):
        return 0.5
    if dirs & _DOC_DIRS or posixpath.splitext(name)[1].lower() in _DOC_EXTENSIONS:
        return 0.25
    if name.upper().startswith(("README", "CHANGELOG", "LICENSE", "CONTRIBUTING")):
        return 0.25
    return 1.0


def headline(file: ChangedFile) -> str:
    """One cheap line for a file that gets no full review: status, size, and the code
    sections its hunks touch (the text git puts after a hunk header, usually the
    enclosing function). Ends with a newline; at most `HEADLINE_CHARS` long."""
    sections = _SECTION.findall(file.patch or "")
    moved = f" from {file.previous_filename}" if file.previous_filename else ""
    line = f"- {file.filename} ({file.status}{moved}): +{file.additions} -{file.deletions}"
    line += f" in {len(sections)} hunk(s)"
    touched = list(dict.fromkeys(s.strip() for s in sections if s.strip()))[:3]
    if touched:
        line += "; touches " + " | ".join(touched)
    return line[: HEADLINE_CHARS - 1] + "\n"
