"""Which files no one wrote by hand, after GitHub Linguist's conventions.

GitHub collapses a file in its diff view when Linguist calls it generated, and leaves
vendored code out of a repository's language statistics; reviewq leaves the same
files out of the review budget. The rules here are ported from Linguist at commit
b45dbe9b2825a43285bcd035861be91cc0a7299e (v9.6.0-36-gb45dbe9b2, github.com/
github-linguist/linguist): `lib/linguist/generated.rb` (lockfiles, tool-owned
directories, generator banners, minified files) and the third-party directory
entries of `lib/linguist/vendor.yml`. Linguist reads whole files; a review only has
the patch, so a banner is looked for in the lines the patch shows near the top of the
file (see `PatchView`).

Not ported, on purpose: vendor.yml's entries for language statistics that are
hand-written in real repositories (`.github/`, `Jenkinsfile`, `*.d.ts`,
`tests/fixtures/`, `testdata/`, `cache/`, `.gitignore`, popular library file names
such as `controls.js` or `react.js`), since a review must read them. Nor does
Linguist call `build/` generated. And a folder name alone never skips code in a
source or test tree (`src/`, `lib/`, `test/`, ...): `build/` and `dist/` (vendor.yml's
`(^|/)dist/`) and the vendored directories count only outside them, because
`packages/astro/src/core/build/` is hand-written code that happens to build sites,
and code vendored under `src/` is patched by hand. Likewise a lockfile in a test tree
is a test's input (`tests/fixtures/invalid_lock/poetry.lock` in python-poetry/poetry
reads "This lock file is broken!"), so `workers.review.skiprules` reviews it.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from dataclasses import dataclass, field

__all__ = [
    "LOCKFILES",
    "PatchView",
    "generated_banner",
    "generated_path",
    "in_test_tree",
    "is_lockfile",
    "minified",
    "pip_compile_output",
    "vendored_path",
]

# generated.rb: composer_lock?, cargo_lock?, deno_lock?, flake_lock?, bazel_lock?,
# go_lock?, package_resolved?, poetry_lock?, pdm_lock?, uv_lock?, pixi_lock?,
# npm_shrinkwrap_or_package_lock?, pnpm_lock?, bun_lock?, pipenv_lock?,
# terraform_lock?, julia_manifest?; plus other ecosystems' lockfiles.
LOCKFILES = frozenset(
    {
        "package-lock.json",
        "npm-shrinkwrap.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "bun.lockb",
        "bun.lock",
        "deno.lock",
        "poetry.lock",
        "Pipfile.lock",
        "pdm.lock",
        "uv.lock",
        "pixi.lock",
        "Cargo.lock",
        "Gemfile.lock",
        "composer.lock",
        "go.sum",
        "go.work.sum",
        "Gopkg.lock",
        "glide.lock",
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
        ".terraform.lock.hcl",
        "Manifest.toml",
        "JuliaManifest.toml",
    }
)
_LOCK_GLOBS = ("*.lock", "*.lockfile", "mise.*.lock")

# generated.rb's name rules (designer, specflow, zephir, pascal_tlb, sqlx, yarn pnp,
# cargo_orig, secrets_baseline, protocol buffers) and other code generators' suffixes.
_GENERATED_NAMES = (
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
    "*.designer.vb",
    "*.Designer.cs",
    "*.Designer.vb",
    "*.feature.cs",
    "*.zep.c",
    "*.zep.h",
    "*.zep.php",
    "*_tlb.pas",
    "*_TLB.pas",
    ".pnp.*",
    "Cargo.toml.orig",
    ".secrets.baseline",
    "*.snap",
    "*.map",
    "*.nib",
    "*.xcworkspacedata",
    "*.xcuserstate",
)
# Directories only tools write to: relay's __generated__, Jest/Vitest __snapshots__,
# Next.js output, coverage.py's htmlcov, IntelliJ's .idea, Carthage builds, Godeps.
_TOOL_DIRS = frozenset({"__generated__", "__snapshots__", ".next", "htmlcov", ".idea"})
_TOOL_PATHS = re.compile(r"(^|/)(Carthage/Build|Godeps|\.sqlx)/")
# Output directories: ambiguous words, build output only outside source and test trees.
_OUTPUT_DIRS = frozenset({"dist", "build"})
# vendor.yml "Vendored dependencies", node_modules?, bower_components, jspm, Go vendor.
_VENDORED_DIRS = frozenset(
    {"vendor", "vendors", "third_party", "third-party", "thirdparty", "3rdparty"}
    | {"3rd_party", "3rd-party", "node_modules", "bower_components", "jspm_packages"}
    | {"pods"}
)
# Where code is written by hand: any of these above a `build/` or `dist/` keeps it.
_SOURCE_DIRS = frozenset({"src", "source", "sources", "lib", "libs", "internal", "cmd", "app"})
# Test trees hold hand-written fixtures, fake `node_modules` packages included.
_TEST_DIRS = frozenset(
    {"test", "tests", "__tests__", "spec", "specs", "testing", "e2e", "playground"}
    | {"fixtures", "__fixtures__", "fixture", "testdata", "__mocks__"}
)
_MINIFIABLE = frozenset({".js", ".mjs", ".cjs", ".css"})
_TEST_NAMES = ("test_*", "*_test.*", "*.test.*", "*.spec.*", "*Test.java", "*Tests.cs")


@dataclass(frozen=True, slots=True)
class PatchView:
    """What a patch shows of the file: the new-side lines near its top, by number, and
    the added lines. Built once per file; `top_lines` bounds what is kept."""

    top: dict[int, str] = field(default_factory=dict)
    added: tuple[str, ...] = ()
    last_line: int = 0
    lines: tuple[str, ...] = ()

    @classmethod
    def of(cls, patch: str, top_lines: int = 40) -> PatchView:
        top: dict[int, str] = {}
        added: list[str] = []
        number, last = 0, 0
        lines = patch.split("\n")
        for line in lines:
            if match := _HUNK_START.match(line):
                number = int(match[1]) + (match[2] == "0")
                continue
            tag = line[:1]
            if tag in ("+", " ", ""):
                if number <= top_lines:
                    top[number] = line[1:]
                if tag == "+":
                    added.append(line)
                last = max(last, number)
                number += 1
        return cls(top, tuple(added), last, tuple(lines))

    def head(self, count: int) -> list[str]:
        """The shown lines among the file's first `count`, in order."""
        return [self.top[n] for n in sorted(self.top) if n <= count]


_HUNK_START = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@")


def _dirs(path: str) -> list[str]:
    return path.split("/")[:-1]


def is_lockfile(path: str) -> bool:
    name = posixpath.basename(path)
    return name in LOCKFILES or any(fnmatch.fnmatchcase(name, g) for g in _LOCK_GLOBS)


def in_test_tree(path: str) -> bool:
    """Under a test directory, or named like a test file."""
    name = posixpath.basename(path)
    if any(d.lower() in _TEST_DIRS for d in _dirs(path)):
        return True
    return any(fnmatch.fnmatchcase(name, g) for g in _TEST_NAMES)


def vendored_path(path: str) -> bool:
    """Third-party code by its directory (vendor.yml), unless it sits in a source or
    test tree: there a `node_modules/` holds hand-written fixture packages, and code
    copied in is patched by hand (withastro/astro#17747 hardened its vendored
    `src/assets/utils/vendor/image-size/`, a fix that must be reviewed)."""
    dirs = {d.lower() for d in _dirs(path)}
    return bool(dirs & _VENDORED_DIRS) and not dirs & (_SOURCE_DIRS | _TEST_DIRS)


def generated_path(path: str) -> bool:
    """Generated by its name, a tool-owned directory, or a build-output directory
    outside every source and test tree (a folder name alone never skips src/ code)."""
    name = posixpath.basename(path)
    if any(fnmatch.fnmatchcase(name, g) for g in _GENERATED_NAMES):
        return True
    dirs = _dirs(path)
    if set(dirs) & _TOOL_DIRS or _TOOL_PATHS.search(path):
        return True
    lowered = {d.lower() for d in dirs}
    return bool(lowered & _OUTPUT_DIRS) and not lowered & (_SOURCE_DIRS | _TEST_DIRS)


# Generator banners from generated.rb: (extensions or None for any, how many first
# lines, pattern). Most name one tool; the last rows are the usual generic words.
_BANNERS: tuple[tuple[frozenset[str] | None, int, re.Pattern[str]], ...] = (
    (frozenset({".go"}), 40, re.compile(r"^// Code generated .*")),
    (None, 20, re.compile(r"This file was autogenerated by go-to-protobuf")),
    (None, 3, re.compile(r"Generated by the protocol buffer compiler\.  DO NOT EDIT!")),
    (None, 6, re.compile(r"GENERATED CODE -- DO NOT EDIT!")),
    (None, 6, re.compile(r"Autogenerated by Thrift Compiler")),
    (frozenset({".h"}), 1, re.compile(r"DO NOT EDIT THIS FILE - it is machine generated")),
    (frozenset({".c", ".cpp"}), 1, re.compile(r"Generated by Cython")),
    (None, 3, re.compile(r"Generated by Haxe")),
    (frozenset({".js"}), 5, re.compile(r"Generated by PEG\.js")),
    (frozenset({".js"}), 1, re.compile(r"^/\* (parser )?generated by jison")),
    (frozenset({".js"}), 1, re.compile(r"^// Generated by ")),  # CoffeeScript
    (None, 1, re.compile(r"^// Generated by the gRPC")),
    (frozenset({".java"}), 1, re.compile(r"generated by JFlex|This is a generated file")),
    (frozenset({".java"}), 2, re.compile(r"This file is generated by jOOQ\.")),
    (frozenset({".dart"}), 3, re.compile(r"(?i)generated code\W{2,3}do not modify")),
    (frozenset({".rb"}), 3, re.compile(r"automatically generated by Racc|Code generated by")),
    (frozenset({".Rd"}), 1, re.compile(r"Generated by roxygen2: do not edit by hand")),
    (None, 2, re.compile(r"<!-- Generated by pkgdown: do not edit by hand -->")),
    (None, 31, re.compile(r"(?i)<!--\s+Generated by Doxygen\s+[.0-9]+\s*-->")),
    # Facebook's @generated, and the usual "do not edit" / "autogenerated" banners.
    (None, 5, re.compile(r"(?i)@generated|\bdo not edit\b|\bauto-?generated\b")),
)
# pip-compile (and `uv pip compile`) banners and annotations: `    # via pkg` lines are
# written by no one else, and show in every hunk of such a file, wherever it starts.
_PIP_COMPILE_BANNER = re.compile(r"^#\s+(pip-compile|uv pip compile)\b")
_PIP_COMPILE_VIA = re.compile(r"^[ +-] {4}# via\b")


def generated_banner(path: str, view: PatchView) -> bool:
    """A generator's banner among the first lines the patch shows, at any hunk."""
    ext = posixpath.splitext(path)[1]
    for exts, count, pattern in _BANNERS:
        if exts is not None and ext not in exts:
            continue
        if any(pattern.search(text) for text in view.head(count)):
            return True
    return False


def pip_compile_output(path: str, view: PatchView) -> bool:
    """A requirements file pip-compile wrote: its banner, or its `# via` annotations."""
    if posixpath.splitext(path)[1] != ".txt":
        return False
    if any(_PIP_COMPILE_BANNER.match(text) for text in view.head(10)):
        return True
    return any(_PIP_COMPILE_VIA.match(line) for line in view.lines)


# A minified file is one long line (or a few): most of what it adds sits on lines far
# longer than anyone writes by hand. Linguist looks only at .js and .css
# (generated.rb `maybe_minified?`); a file with many lines is not minified whatever a
# few of them hold (an inline sourcemap snapshot in a test, a long changelog entry).
_LONG_LINE = 500
_MINIFIED_LONGEST = 1000
_MINIFIED_MAX_LINES = 50
_MINIFIED_NAMES = ("*.min.js", "*.min.mjs", "*.min.css", "*-min.js", "*.bundle.js")


def minified(path: str, view: PatchView) -> bool:
    """By name (`*.min.js`), or a short .js/.css file that is not a test whose added
    characters sit half or more on lines of 500+ characters, one of 1000+."""
    name = posixpath.basename(path)
    if any(fnmatch.fnmatchcase(name, g) for g in _MINIFIED_NAMES):
        return True
    if posixpath.splitext(name)[1].lower() not in _MINIFIABLE or in_test_tree(path):
        return False
    if view.last_line > _MINIFIED_MAX_LINES:
        return False
    total = sum(len(line) for line in view.added)
    long = sum(len(line) for line in view.added if len(line) > _LONG_LINE)
    longest = max((len(line) for line in view.added), default=0)
    return longest > _MINIFIED_LONGEST and 2 * long >= total
