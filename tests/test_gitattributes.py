""".gitattributes as git reads it, and as the skip rules obey it.

Expected values come from gitattributes(5) and gitignore(5) (pattern format), and from
Linguist's lib/linguist/lazy_blob.rb for what `linguist-generated=false` means; the
real file and diff are docker-library/redis's (tests/fixtures/diffs/SOURCES.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from scheduler.config.planning import PlanningConfig
from workers.review.changes import ChangedFile
from workers.review.diff import parse_unified_diff
from workers.review.gitattributes import MAX_LINE_BYTES, linguist_flag, parse_gitattributes
from workers.review.planning import plan_review
from workers.review.skiprules import skip_reason

DIFFS = Path(__file__).parent / "fixtures" / "diffs"


@pytest.mark.parametrize(
    ("pattern", "path", "match"),
    [
        # No slash: the file name at any depth.
        ("*.json", "a.json", True),
        ("*.json", "x/y/a.json", True),
        ("a.json", "x/a.json", True),
        # A slash anchors to the directory of the .gitattributes file.
        ("/a.json", "a.json", True),
        ("/a.json", "x/a.json", False),
        ("x/*.json", "x/a.json", True),
        ("x/*.json", "y/x/a.json", False),
        ("x/*.json", "x/y/a.json", False),  # `*` stays in one component
        # `**`: leading, trailing and in the middle.
        ("**/gen/*.ts", "gen/a.ts", True),
        ("**/gen/*.ts", "p/q/gen/a.ts", True),
        ("dist/**", "dist/a/b.js", True),
        ("dist/**", "x/dist/a.js", False),
        ("a/**/b.txt", "a/b.txt", True),
        ("a/**/b.txt", "a/x/y/b.txt", True),
        ("a/**/b.txt", "ab/b.txt", False),
        ("/*/**/Dockerfile", "7.2/debian/Dockerfile", True),  # docker-library/redis
        ("/*/**/Dockerfile", "7.2/Dockerfile", True),
        ("/*/**/Dockerfile", "Dockerfile", False),
        # `?`, bracket expressions, escapes.
        ("file?.js", "file1.js", True),
        ("file?.js", "file/.js", False),
        ("[abc].txt", "b.txt", True),
        ("[!abc].txt", "b.txt", False),
        ("[a-c]x", "cx", True),
        ("\\*.md", "*.md", True),
        ("\\*.md", "a.md", False),
        ("[oops", "[oops", True),  # an unclosed bracket is an ordinary character
        # A directory pattern never matches a file (git: write `dir/**` instead).
        ("build/", "build/x.js", False),
    ],
)
def test_patterns(pattern: str, path: str, match: bool) -> None:
    attrs = parse_gitattributes(f"{pattern} linguist-generated\n")
    assert ("linguist-generated" in attrs.lookup(path)) is match


def test_states_and_later_lines_win() -> None:
    text = (
        "# a comment\n"
        "\n"
        "gen/** linguist-generated\n"
        "gen/keep/** -linguist-generated\n"
        "gen/maybe/** !linguist-generated\n"
        "gen/off/** linguist-generated=false\n"
        "gen/v/** linguist-generated=yes linguist-vendored\n"
    )
    attrs = parse_gitattributes(text)
    flags = {
        path: linguist_flag(attrs.lookup(path), "linguist-generated")
        for path in ("gen/a.ts", "gen/keep/a.ts", "gen/maybe/a.ts", "gen/off/a.ts", "gen/v/a")
    }
    # set: True; unset: False; `!`: unspecified again (heuristics decide); "false":
    # False; any other value: True (Linguist's boolean_attribute).
    assert flags == {
        "gen/a.ts": True,
        "gen/keep/a.ts": False,
        "gen/maybe/a.ts": None,
        "gen/off/a.ts": False,
        "gen/v/a": True,
    }
    assert attrs.lookup("other.ts") == {}


def test_nested_files_and_macros() -> None:
    root = parse_gitattributes("[attr]generated linguist-generated -diff\n*.pb generated\n")
    assert root.lookup("a/x.pb") == {"generated": True, "linguist-generated": True, "diff": False}
    sub = parse_gitattributes("*.pb -linguist-generated\n[attr]nope x\n", base="a")
    both = root.merged(sub)
    assert both.lookup("a/x.pb")["linguist-generated"] is False  # the deeper file wins
    assert both.lookup("b/x.pb")["linguist-generated"] is True  # outside its directory
    assert "macro 'nope' not allowed" in sub.errors[0]  # macros only in the root file
    assert parse_gitattributes("*.png binary\n").lookup("a.png")["diff"] is False


def test_bad_lines_are_reported_and_skipped() -> None:
    long = "a" * MAX_LINE_BYTES + " linguist-generated"
    attrs = parse_gitattributes(f"!neg.js linguist-generated\n{long}\nok.js -diff\n")
    assert len(attrs.errors) == 2
    assert attrs.lookup("neg.js") == {} and attrs.lookup("ok.js") == {"diff": False}
    assert parse_gitattributes('"sp ace.js" linguist-vendored\n').lookup("sp ace.js") == {
        "linguist-vendored": True
    }


def test_a_hostile_pattern_matches_in_linear_time() -> None:
    """`*a*a*...b` against a long run of `a` is exponential for a backtracking regex."""
    pattern = "*a" * 200 + "b"
    attrs = parse_gitattributes(f"{pattern} linguist-generated\n")
    start = time.perf_counter()
    assert attrs.lookup("a" * 1500) == {}
    assert time.perf_counter() - start < 2.0


def _file(path: str, patch: str = "@@ -1 +1 @@\n-a\n+b") -> ChangedFile:
    return ChangedFile(filename=path, additions=1, deletions=1, changes=2, patch=patch)


@pytest.mark.parametrize(
    ("line", "path", "reason"),
    [
        # Attributes skip what the heuristics would review...
        ("src/gen/** linguist-generated", "src/gen/api.ts", "generated"),
        ("third/** linguist-vendored", "third/lib.c", "vendored"),
        ("*.svg -diff", "icons/a.svg", "marked -diff in .gitattributes"),
        ("*.svg diff=false", "icons/a.svg", "marked -diff in .gitattributes"),
        ("*.dat binary", "a.dat", "marked -diff in .gitattributes"),
        # ...and review what the heuristics would skip.
        ("yarn.lock linguist-generated=false", "yarn.lock", None),
        ("dist/** -linguist-generated", "dist/app.js", None),
        ("vendor/** linguist-vendored=false", "vendor/ours/x.go", None),
        # `!attr` hands the decision back to the heuristics.
        ("yarn.lock !linguist-generated", "yarn.lock", "lockfile"),
        # Vendored off does not make a lockfile hand-written.
        ("vendor/** -linguist-vendored", "vendor/yarn.lock", "lockfile"),
    ],
)
def test_attributes_override_the_heuristics_both_ways(
    line: str, path: str, reason: str | None
) -> None:
    got = skip_reason(_file(path), attributes=parse_gitattributes(line + "\n"))
    assert (got.split(" (")[0] if got else None) == reason


def test_generated_false_keeps_a_minified_file_and_keep_globs_still_win() -> None:
    patch = "@@ -0,0 +1 @@\n+" + "x" * 2000
    attrs = parse_gitattributes("static/*.js linguist-generated=false\ngen/** linguist-generated\n")
    assert skip_reason(_file("static/app.js", patch)) == "minified"
    assert skip_reason(_file("static/app.js", patch), attributes=attrs) is None
    assert skip_reason(_file("gen/a.py"), attributes=attrs, keep=("gen/**",)) is None
    assert skip_reason(_file("gen/a.py"), attributes=attrs, skip=("*.py",)) == (
        "matched skip glob '*.py'"
    )


def test_a_real_repository_plans_around_its_generated_dockerfiles() -> None:
    """docker-library/redis#397: one template edit, four Dockerfiles generated from it,
    which its .gitattributes marks `linguist-generated`."""
    files = parse_unified_diff((DIFFS / "redis-0e3e2d09-templates.diff").read_text())
    attrs = parse_gitattributes((DIFFS / "redis-0e3e2d09.gitattributes").read_text())
    assert attrs.errors == ()
    plan = plan_review(files, PlanningConfig(), attributes=attrs)
    assert [m.files for m in plan.messages] == [("Dockerfile.template",)]
    assert {s.path: s.reason for s in plan.skipped} == {
        f"{v}/debian/Dockerfile": "generated (linguist-generated in .gitattributes)"
        for v in ("6.0", "6.2", "7.0", "7.2")
    }
    # Without the attributes (today's callers) every file is reviewed.
    assert plan_review(files, PlanningConfig()).skipped == ()
