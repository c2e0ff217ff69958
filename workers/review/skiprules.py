"""Which changed files are worth review budget, and which matter most.

Every message sent to a provider spends a request out of a window the whole team
shares, so files no reviewer reads (lockfiles, generated code, vendored trees,
minified bundles) are left out before packing, each with the reason shown in the
review. When a PR is too large to review in full, `risk` decides which files still get
a full review. Both are plain path and size heuristics: cheap, deterministic and easy
to override with globs in config.
"""

from __future__ import annotations

import fnmatch
import math
import posixpath
import re
from collections.abc import Sequence

from workers.review.changes import ChangedFile

__all__ = [
    "HEADLINE_CHARS",
    "LOCKFILES",
    "degraded_note",
    "headline",
    "matches_glob",
    "rank_by_risk",
    "risk",
    "skip_reason",
    "triage",
]

LOCKFILES = frozenset(
    {
        "package-lock.json",
        "npm-shrinkwrap.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "bun.lockb",
        "deno.lock",
        "poetry.lock",
        "Pipfile.lock",
        "pdm.lock",
        "uv.lock",
        "Cargo.lock",
        "Gemfile.lock",
        "composer.lock",
        "go.sum",
        "go.work.sum",
        "flake.lock",
        "packages.lock.json",
        "paket.lock",
        "mix.lock",
        "pubspec.lock",
        "Podfile.lock",
        "Package.resolved",
        "gradle.lockfile",
        "conan.lock",
        "MODULE.bazel.lock",
    }
)
_LOCK_GLOBS = ("*.lock", "*.lockfile")
_VENDORED_DIRS = frozenset(
    {"vendor", "vendors", "third_party", "third-party", "thirdparty", "node_modules"}
    | {"bower_components", "jspm_packages", "pods"}
)
_GENERATED_DIRS = frozenset({"dist", "build", "__snapshots__", "__generated__", ".next"})
_GENERATED_GLOBS = (
    "*_pb2.py",
    "*_pb2.pyi",
    "*_pb2_grpc.py",
    "*.pb.go",
    "*.pb.cc",
    "*.pb.h",
    "*.pb.swift",
    "*.generated.*",
    "*.gen.go",
    "zz_generated*.go",
    "*.g.dart",
    "*.freezed.dart",
    "*.designer.cs",
    "*.snap",
    "*.map",
)
_MINIFIED_GLOBS = ("*.min.js", "*.min.mjs", "*.min.css", "*-min.js", "*.bundle.js")
# Go's "Code generated ... DO NOT EDIT.", Facebook's @generated, and the usual banners.
_GENERATED_MARKER = re.compile(r"@generated|\bdo not edit\b|\bauto-?generated\b", re.IGNORECASE)
# A minified file is one long line (or a few): most of what it adds sits on lines far
# longer than anyone writes by hand. A single long line in source code stays reviewable.
_LONG_LINE = 500
_MINIFIED_LONGEST = 1000

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


def triage(
    files: Sequence[ChangedFile], *, skip: Sequence[str] = (), keep: Sequence[str] = ()
) -> tuple[list[ChangedFile], list[tuple[str, str]]]:
    """(files to review in their given order, (path, reason) of the rest by path)."""
    kept: list[ChangedFile] = []
    skipped: list[tuple[str, str]] = []
    for file in files:
        reason = skip_reason(file, skip=skip, keep=keep)
        if reason is None:
            kept.append(file)
        else:
            skipped.append((file.filename, reason))
    return kept, sorted(skipped)


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
    file: ChangedFile, *, skip: Sequence[str] = (), keep: Sequence[str] = ()
) -> str | None:
    """Why `file` gets no review budget, or None to review it.

    Order matters: what cannot be reviewed (deleted, binary, no patch) goes first; then
    explicit `skip` globs; `keep` globs only overrule the default name and content
    rules below them, so a repo can keep its hand-written `build/` scripts.
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
    return _default_reason(path, file.patch or "")


def _physical_reason(file: ChangedFile) -> str | None:
    """Files with nothing reviewable in them, whatever the config says."""
    if file.status == "removed":
        return "deleted"
    if file.withheld:
        return file.withheld
    if file.patch is None:
        if file.status in ("renamed", "copied", "unchanged") and file.changes == 0:
            return f"{file.status} without changes"
        if file.additions + file.deletions == 0:
            return "binary (no patch)"
        return "patch too large for the API (no patch)"
    if not _SECTION.search(file.patch):
        return "no content changes (no diff hunks)"
    return None


def _default_reason(path: str, patch: str) -> str | None:
    name = posixpath.basename(path)
    dirs = {part.lower() for part in path.split("/")[:-1]}
    if name in LOCKFILES or any(fnmatch.fnmatchcase(name, g) for g in _LOCK_GLOBS):
        return "lockfile"
    if dirs & _VENDORED_DIRS:
        return "vendored"
    if dirs & _GENERATED_DIRS or any(fnmatch.fnmatchcase(name, g) for g in _GENERATED_GLOBS):
        return "generated"
    if any(fnmatch.fnmatchcase(name, g) for g in _MINIFIED_GLOBS) or _looks_minified(patch):
        return "minified"
    if _has_generated_marker(patch):
        return "generated"
    return None


def _looks_minified(patch: str) -> bool:
    """Half or more of the added characters sit on lines of 500+ characters, one 1000+."""
    added = [line for line in patch.split("\n") if line.startswith("+")]
    total = sum(len(line) for line in added)
    long = sum(len(line) for line in added if len(line) > _LONG_LINE)
    longest = max((len(line) for line in added), default=0)
    return longest > _MINIFIED_LONGEST and 2 * long >= total


def _has_generated_marker(patch: str) -> bool:
    """A generator's banner in the first lines of a hunk that starts the file."""
    lines = patch.split("\n")
    for i, line in enumerate(lines):
        if re.match(r"@@ -\d+(?:,\d+)? \+1(?:,\d+)? @@", line):
            head = [body[1:] for body in lines[i + 1 : i + 6] if body[:1] in ("+", " ")]
            return any(_GENERATED_MARKER.search(text) for text in head)
    return False


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
