"""Planning: which files get review budget, how diffs are packed and split into
messages, how a large PR degrades, what a plan costs, and reading local diffs.

The packing properties are checked against ground truth the test builds itself (the
hunks it generated) and against the provider simulator's own diff reader, never
against planning's internals.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from scheduler.config.planning import PlanningConfig, RepoOverride
from scheduler.quota.plans import Account, get_preset
from scheduler.sandbox.provider.review import completion, parse_diff
from workers.review.changes import ChangedFile
from workers.review.diff import new_side_lines, numbered_view, parse_unified_diff
from workers.review.plan import PlannedMessage, ReviewPlan
from workers.review.planning import (
    DIFF_SYSTEM_PROMPT,
    SUMMARY_SYSTEM_PROMPT,
    build_request,
    estimate,
    estimate_tokens,
    plan_review,
)
from workers.review.skiprules import headline, risk

MIN_BUDGET = estimate_tokens(DIFF_SYSTEM_PROMPT) + 128  # 512 characters of room at 4 a token


# ----------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class GenHunk:
    """A hunk as the test knows it: where it starts on each side and its body lines."""

    old: int  # first old-side line it covers
    new: int
    lines: tuple[str, ...]

    def header(self) -> str:
        olen = sum(1 for x in self.lines if x[:1] in " -")
        nlen = sum(1 for x in self.lines if x[:1] in " +")
        return f"@@ -{self.old - (olen == 0)},{olen} +{self.new - (nlen == 0)},{nlen} @@"

    def old_side(self) -> dict[int, str]:
        return _side(self.old, self.lines, " -")

    def new_side(self) -> dict[int, str]:
        return _side(self.new, self.lines, " +")


def _side(start: int, lines: Iterable[str], tags: str) -> dict[int, str]:
    out, n = {}, start
    for line in lines:
        if line[:1] in tags and line[:1] != "\\":
            out[n] = line
            n += 1
    return out


def patch_of(hunks: Iterable[GenHunk]) -> str:
    return "\n".join(f"{h.header()}\n" + "\n".join(h.lines) for h in hunks)


def changed(path: str, hunks: list[GenHunk], status: str = "modified") -> ChangedFile:
    plus = sum(1 for h in hunks for x in h.lines if x[:1] == "+")
    minus = sum(1 for h in hunks for x in h.lines if x[:1] == "-")
    return ChangedFile.model_validate(
        {
            "filename": path,
            "status": status,
            "additions": plus,
            "deletions": minus,
            "changes": plus + minus,
            "patch": patch_of(hunks),
        }
    )


def simple(path: str, added: int = 3, start: int = 10, width: int = 20) -> ChangedFile:
    lines = (" context", *(f"+{path} line {i}".ljust(width, ".") for i in range(added)), " end")
    return changed(path, [GenHunk(start, start, lines)])


HUNK_HEADER = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def read_messages(messages: Iterable[PlannedMessage]) -> dict[str, list[tuple[int, int, str]]]:
    """Every hunk body line in the messages, by path, as (old number, new number, line),
    read by the headers' counts; 0 marks the side a line is not on."""
    found: dict[str, list[tuple[int, int, str]]] = {}
    for message in messages:
        lines, path, i = message.text.split("\n"), "", 0
        while i < len(lines):
            line, i = lines[i], i + 1
            if line.startswith("+++ b/"):
                path = line[6:]
            elif match := HUNK_HEADER.match(line):
                olen, nlen = int(match[2] or 1), int(match[4] or 1)
                old, new = int(match[1]) + (olen == 0), int(match[3]) + (nlen == 0)
                while olen or nlen or (i < len(lines) and lines[i].startswith("\\")):
                    row, tag, i = lines[i], lines[i][:1], i + 1
                    assert tag in " +-\\", f"hunk body ended early at {row!r}"
                    found.setdefault(path, []).append(
                        (old if tag in " -" else 0, new if tag in " +" else 0, row)
                    )
                    old, olen = (old + 1, olen - 1) if tag in " -" else (old, olen)
                    new, nlen = (new + 1, nlen - 1) if tag in " +" else (new, nlen)
    return found


def expected_rows(hunks: Iterable[GenHunk]) -> list[tuple[int, int, str]]:
    rows = []
    for h in hunks:
        old, new = h.old, h.new
        for line in h.lines:
            tag = line[:1]
            rows.append((old if tag in " -" else 0, new if tag in " +" else 0, line))
            old += tag in " -"
            new += tag in " +"
    return rows


def added_lines(text: str) -> dict[str, list[tuple[int, str]]]:
    """The simulator's view: added lines with their new-side numbers, by path."""
    out: dict[str, list[tuple[int, str]]] = {}
    for hunk in parse_diff(text):
        out.setdefault(hunk.path, []).extend(hunk.added)
    return out


def config(**kwargs: object) -> PlanningConfig:
    return PlanningConfig.model_validate(kwargs)


# -------------------------------------------------------------------------- skip rules


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("package-lock.json", "lockfile"),
        # A lockfile is known by its name wherever it sits, and the names the globs
        # alone catch (no entry in LOCKFILES) are lockfiles too.
        ("web/package-lock.json", "lockfile"),
        ("services/api/go.sum", "lockfile"),
        ("services/api/go.work.sum", "lockfile"),
        ("app/Gemfile.lock", "lockfile"),
        ("deps/tools.lock", "lockfile"),
        ("android/app/buildscript-gradle.lockfile", "lockfile"),
        ("web/yarn.lock", "lockfile"),
        ("pnpm-lock.yaml", "lockfile"),
        ("poetry.lock", "lockfile"),
        ("uv.lock", "lockfile"),
        ("Cargo.lock", "lockfile"),
        ("go.sum", "lockfile"),
        ("ios/Podfile.lock", "lockfile"),
        ("vendor/github.com/x/y.go", "vendored"),
        ("third_party/z/z.c", "vendored"),
        ("web/node_modules/left-pad/index.js", "vendored"),
        ("dist/app.js", "generated"),
        ("pkg/build/out.js", "generated"),
        ("api/service_pb2.py", "generated"),
        ("api/service.pb.go", "generated"),
        ("src/Client.generated.cs", "generated"),
        ("web/src/__snapshots__/App.test.tsx.snap", "generated"),
        ("static/app.js.map", "generated"),
        ("static/jquery.min.js", "minified"),
        ("static/site.min.css", "minified"),
    ],
)
def test_default_rules_skip_files_nobody_reviews(path: str, reason: str) -> None:
    plan = plan_review([simple(path), simple("src/app.py")], PlanningConfig())
    assert [(s.path, s.reason) for s in plan.skipped] == [(path, reason)]
    assert [m.files for m in plan.messages] == [("src/app.py",)]


@pytest.mark.parametrize(
    "path",
    [
        # Near misses of every default rule: reviewed in full.
        "src/lock.py",
        "src/lockfile.py",
        "src/unlock.go",
        "docs/locking.md",
        "package-lock.json.orig",
        "go.sum.py",
        "web/yarn.lock.d/notes.txt",
        "lock",
        "src/vendor.go",
        "src/vendoring/x.go",
        "src/distance.py",
        "builder/x.py",
        "api/service_pb2_helpers.py",
        "static/app.min.js.txt",
        "static/admin.js",
        "src/map.py",
    ],
)
def test_default_rules_leave_near_misses_alone(path: str) -> None:
    plan = plan_review([simple(path)], PlanningConfig())
    assert plan.skipped == ()
    assert [m.files for m in plan.messages] == [(path,)]


def test_physical_reasons_come_first_and_every_skip_is_listed() -> None:
    files = [
        ChangedFile(filename="gone.py", status="removed", deletions=3, changes=3, patch="@@"),
        ChangedFile(filename="logo.png", status="added"),
        ChangedFile(filename="huge.sql", additions=40_000, changes=40_000),
        ChangedFile(filename="moved.py", status="renamed", previous_filename="old.py"),
        ChangedFile(filename="script.sh", patch=""),  # a mode change: no hunks
        ChangedFile(filename="merge.py", patch="@@@ -1 -1 +1 @@@\n- a\n +b", changes=2),
        simple("keep.py"),
    ]
    plan = plan_review(files, config(repos={"a/b": {"keep": ["*"]}}), repo="a/b")
    assert {s.path: s.reason for s in plan.skipped} == {
        "gone.py": "deleted",
        "logo.png": "binary (no patch)",
        "huge.sql": "patch too large for the API (no patch)",
        "moved.py": "renamed without changes",
        "script.sh": "no content changes (no diff hunks)",
        "merge.py": "no content changes (no diff hunks)",  # a combined diff is not one
    }
    assert [s.path for s in plan.skipped] == sorted(s.path for s in plan.skipped)


def test_minified_and_generated_files_are_found_by_content() -> None:
    minified = changed("static/bundle.js", [GenHunk(1, 1, ("+" + "a=1;" * 400,))])
    banner = ("+// Code generated by protoc-gen-go. DO NOT EDIT.", "+package api")
    generated = changed("api/types.go", [GenHunk(1, 1, banner)], status="added")
    normal = tuple(f"+value_{i} = compute(value_{i - 1}, step={i})" for i in range(60))
    one_long = changed("src/data.py", [GenHunk(1, 1, (*normal, "+y = '" + "z" * 1100))])
    plan = plan_review([minified, generated, one_long], PlanningConfig())
    assert {s.path: s.reason for s in plan.skipped} == {
        "static/bundle.js": "minified",
        "api/types.go": "generated",
    }
    assert plan.messages[0].files == ("src/data.py",)  # one long line in source stays


def test_config_and_repo_globs_and_keep_overrides() -> None:
    files = [simple(p) for p in ("docs/a.md", "src/x.py", "Makefile", "dist/tool.py", "yarn.lock")]
    override = RepoOverride(skip=("Makefile",), keep=("dist/*.py", "docs/*"))
    cfg = PlanningConfig(skip=("docs/**",), repos={"Acme/API": override})
    plan = plan_review(files, cfg, repo="acme/api")  # names compare case-insensitively
    assert {s.path: s.reason for s in plan.skipped} == {
        "docs/a.md": "matched skip glob 'docs/**'",  # keep never overrules an explicit skip
        "Makefile": "matched skip glob 'Makefile'",
        "yarn.lock": "lockfile",
    }
    assert sorted(f for m in plan.messages for f in m.files) == ["dist/tool.py", "src/x.py"]
    other = plan_review(files, cfg, repo="acme/web")  # other repos get no override
    assert "dist/tool.py" in {s.path for s in other.skipped}
    assert "Makefile" not in {s.path for s in other.skipped}


def test_config_is_strict_and_frozen() -> None:
    with pytest.raises(ValidationError):
        config(skipp=["x"])
    with pytest.raises(ValidationError):
        config(max_message_tokens=0)
    with pytest.raises(ValidationError):
        config(repos={"a/b": {"keep": ["x"], "extra": 1}})
    cfg = PlanningConfig()
    with pytest.raises(ValidationError):
        cfg.max_message_tokens = 10


# ----------------------------------------------------------------------------- packing


def test_small_files_share_a_message_grouped_by_directory() -> None:
    paths = ["web/b.ts", "src/z.py", "web/a.ts", "src/a.py", "README.md", "src/sub/c.py"]
    plan = plan_review([simple(p) for p in paths], PlanningConfig())
    assert len(plan.messages) == 1
    assert plan.messages[0].files == (
        "README.md",
        "src/a.py",
        "src/z.py",
        "src/sub/c.py",
        "web/a.ts",
        "web/b.ts",
    )
    assert plan.messages[0].part is None
    assert not plan.degraded and plan.note is None and plan.summarised == ()


def test_packing_is_first_fit_under_the_budget_and_deterministic() -> None:
    files = [simple(f"pkg{i // 10}/f{i:02}.py", added=12, width=60) for i in range(60)]
    cfg = config(max_message_tokens=1200)
    plan = plan_review(files, cfg)
    assert len(plan.messages) > 3
    assert all(m.tokens <= 1200 for m in plan.messages)
    assert sorted(f for m in plan.messages for f in m.files) == sorted(f.filename for f in files)
    # First fit: no later message could have taken a file of an earlier one... and no
    # two messages are both so empty that they would fit in one.
    sizes = sorted(m.tokens for m in plan.messages)
    assert sizes[0] + sizes[1] - estimate_tokens(DIFF_SYSTEM_PROMPT) > 1200 - 20
    assert plan_review(list(reversed(files)), cfg) == plan
    assert [m.index for m in plan.messages] == list(range(len(plan.messages)))


def test_tokens_match_the_request_and_the_simulators_count() -> None:
    plan = plan_review([simple("a.py"), simple("b/c.py")], PlanningConfig())
    message = plan.messages[0]
    request = build_request(message, model="hf:zai-org/GLM-4.6", max_tokens=512)
    body = completion(
        request.model,
        [m.model_dump() for m in request.messages],
        created=0,
        completion_id="t",
    )
    assert body["usage"]["prompt_tokens"] == message.tokens == plan.estimated_tokens
    assert request.max_tokens == 512
    assert request.messages[0].content == DIFF_SYSTEM_PROMPT
    # The diff is sent with its rows numbered, and the estimate is of that text.
    assert request.messages[1].content == numbered_view(message.text)
    assert new_side_lines(request.messages[1].content) == new_side_lines(message.text)
    assert '"comments"' in DIFF_SYSTEM_PROMPT and '"summary"' in DIFF_SYSTEM_PROMPT


def test_model_budgets_and_chars_per_token() -> None:
    files = [simple(f"src/f{i}.py", added=20, width=50) for i in range(20)]
    cfg = config(max_message_tokens=20_000, model_max_tokens={"*flash*": 1000, "tiny": 700})
    assert len(plan_review(files, cfg, model="glm-4.6").messages) == 1
    flash = plan_review(files, cfg, model="hf:google/gemini-flash")
    tiny = plan_review(files, cfg, model="tiny")
    assert 1 < len(flash.messages) < len(tiny.messages)
    assert all(m.tokens <= 700 for m in tiny.messages)
    dense = plan_review(files, config(max_message_tokens=20_000, chars_per_token=2.0))
    assert dense.messages[0].tokens == estimate_tokens(DIFF_SYSTEM_PROMPT, 2.0) + estimate_tokens(
        numbered_view(dense.messages[0].text), 2.0
    )
    with pytest.raises(ValueError, match="max_message_tokens"):
        plan_review(files, cfg.model_copy(update={"max_message_tokens": 200}))


def test_a_huge_file_is_split_at_hunks_keeping_new_side_numbers() -> None:
    hunks = [
        GenHunk(100 * k + 1, 100 * k + 5, tuple(f"+hunk {k} line {i}" for i in range(30)))
        for k in range(8)
    ]
    big = changed("src/big.py", hunks)
    plan = plan_review([big, simple("src/small.py")], config(max_message_tokens=600))
    parts = [m for m in plan.messages if m.files == ("src/big.py",)]
    assert [m.part for m in parts] == [(k, len(parts)) for k in range(1, len(parts) + 1)]
    assert len(parts) >= 3 and all(m.tokens <= 600 for m in plan.messages)
    assert all(f"Part {m.part[0]} of {len(parts)}" in m.text for m in parts if m.part)
    whole = added_lines(f"+++ b/src/big.py\n{big.patch}")["src/big.py"]
    assert [row for m in parts for row in added_lines(m.text)["src/big.py"]] == whole
    assert read_messages(parts)["src/big.py"] == expected_rows(hunks)
    # Hunks are never cut when they fit: each part starts at an original hunk header.
    starts = {h.header() for h in hunks}
    assert all(any(line in starts for line in m.text.split("\n")) for m in parts)


def test_a_hunk_larger_than_the_budget_is_split_at_lines() -> None:
    body = []
    for i in range(200):
        body += [f" keep {i}", f"-old {i}", f"+new {i}"]
    body.append("\\ No newline at end of file")
    hunk = GenHunk(7, 9, tuple(body))
    plan = plan_review([changed("lib/mod.rb", [hunk])], config(max_message_tokens=500))
    assert len(plan.messages) >= 4 and all(m.tokens <= 500 for m in plan.messages)
    assert all(m.files == ("lib/mod.rb",) and m.part for m in plan.messages)
    assert read_messages(plan.messages)["lib/mod.rb"] == expected_rows([hunk])
    expected = added_lines(f"+++ b/lib/mod.rb\n{patch_of([hunk])}")["lib/mod.rb"]
    got = [row for m in plan.messages for row in added_lines(m.text)["lib/mod.rb"]]
    assert got == expected
    assert plan.messages[-1].text.rstrip("\n").endswith("\\ No newline at end of file")


def test_a_no_newline_marker_counts_towards_the_piece_it_sticks_to() -> None:
    """Found by the property below: the marker rode along uncounted and overflowed."""
    long = " " + "y" * 600
    hunk = GenHunk(1, 1, (" ", long, long, long, "\\ No newline at end of file"))
    plan = plan_review([changed("a.py", [hunk])], config(max_message_tokens=500))
    assert all(m.tokens <= 500 for m in plan.messages)
    assert read_messages(plan.messages)["a.py"] == expected_rows([hunk])
    assert plan.messages[-1].text.count(long) == 1


# Hypothesis: random well-formed hunks (lines may look like headers: "--- x", "+++ y").
_TEXT = st.text(st.sampled_from("ab -+@\\#{}x"), max_size=30)
_LONG = st.integers(600, 950).map(lambda n: "y" * n)  # longer than 512 chars of room
_LINE = st.tuples(st.sampled_from(" +-"), st.one_of(_TEXT, _TEXT, _TEXT, _LONG))


# File names, each with the reason the default rules must give it (None: reviewed).
# The oracle is this table, written from the rules' documentation, not from skiprules.
_PLAIN_DIR = st.sampled_from(["", "src/", "web/", "services/api/", "lib/a/b/"])
_STEM = st.text(st.sampled_from("abcxyz_"), min_size=1, max_size=8)
_PLAIN = st.builds(
    lambda d, stem, ext: f"{d}{stem}{ext}",
    _PLAIN_DIR,
    _STEM,
    st.sampled_from([".py", ".go", ".ts", ".rs", ""]),
)
_LOCKFILE = st.one_of(
    st.builds(
        lambda d, n: d + n,
        _PLAIN_DIR,
        st.sampled_from(
            [
                "package-lock.json",
                "yarn.lock",
                "go.sum",
                "Cargo.lock",
                "uv.lock",
                "pnpm-lock.yaml",
                "Gemfile.lock",
                "composer.lock",
                "flake.lock",
                "Package.resolved",
                "npm-shrinkwrap.json",
                "gradle.lockfile",
            ]
        ),
    ),
    st.builds(
        lambda d, stem, ext: f"{d}{stem}{ext}",
        _PLAIN_DIR,
        _STEM,
        st.sampled_from([".lock", ".lockfile"]),
    ),
)
# Vendored directories, like build output, count only outside source trees.
_VENDORED = st.builds(
    lambda d, v, n: f"{d}{v}/{n}",
    st.sampled_from(["", "web/", "services/api/"]),
    st.sampled_from(["vendor", "third_party", "node_modules", "Vendor", "pods"]),
    st.builds(lambda d, s: f"{d}{s}.go", st.sampled_from(["", "x/", "web/y/"]), _STEM),
)
# `build/` and `dist/` are build output only outside source trees (src/, lib/, ...):
# `packages/astro/src/core/build/` is hand-written (issue 16). `__generated__` is
# generated wherever it sits.
_OUTSIDE_SOURCE = st.sampled_from(["", "web/", "services/api/"])
_GENERATED = st.one_of(
    st.builds(
        lambda d, g, n: f"{d}{g}/{n}",
        _OUTSIDE_SOURCE,
        st.sampled_from(["dist", "build"]),
        st.builds(
            lambda d, stem, ext: f"{d}{stem}{ext}",
            _OUTSIDE_SOURCE,
            _STEM,
            st.sampled_from([".py", ".go", ".ts", ".rs", ""]),
        ),
    ),
    st.builds(lambda d, n: f"{d}__generated__/{n}", _PLAIN_DIR, _PLAIN),
    st.builds(
        lambda d, stem, ext: f"{d}{stem}{ext}",
        _PLAIN_DIR,
        _STEM,
        st.sampled_from(["_pb2.py", ".pb.go", ".generated.cs", ".snap", ".js.map", ".gen.go"]),
    ),
)
_MINIFIED = st.builds(
    lambda d, stem, ext: f"{d}{stem}{ext}",
    _PLAIN_DIR,
    _STEM,
    st.sampled_from([".min.js", ".min.css", ".bundle.js"]),
)
NAMED_FILES = st.one_of(
    _PLAIN.map(lambda n: (n, None)),
    _PLAIN.map(lambda n: (n, None)),
    _LOCKFILE.map(lambda n: (n, "lockfile")),
    _VENDORED.map(lambda n: (n, "vendored")),
    _GENERATED.map(lambda n: (n, "generated")),
    _MINIFIED.map(lambda n: (n, "minified")),
)  # fmt: skip


@st.composite
def diffs(draw: st.DrawFn) -> list[tuple[ChangedFile, list[GenHunk], str | None]]:
    """Changed files with random hunks, each with the reason it must be skipped for."""
    named = draw(st.lists(NAMED_FILES, min_size=1, max_size=6, unique_by=lambda x: x[0]))
    out = []
    for name, reason in named:
        old = draw(st.integers(1, 50))
        new, hunks = old + draw(st.integers(0, 20)), []
        for _ in range(draw(st.integers(1, 4))):
            rows = draw(st.lists(_LINE, min_size=1, max_size=60))
            lines = tuple(tag + text for tag, text in rows)
            hunks.append(GenHunk(old, new, lines))
            gap = draw(st.integers(1, 30))
            old += sum(1 for x in lines if x[:1] in " -") + gap
            new += sum(1 for x in lines if x[:1] in " +") + gap
        if draw(st.booleans()):
            last = hunks[-1]
            hunks[-1] = GenHunk(last.old, last.new, (*last.lines, "\\ No newline at end of file"))
        out.append((changed(name, hunks), hunks, reason))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(diffs(), st.integers(MIN_BUDGET, MIN_BUDGET + 2500))
def test_packing_never_loses_duplicates_or_overflows(
    generated: list[tuple[ChangedFile, list[GenHunk], str | None]], budget: int
) -> None:
    """Exactly the files the rules skip are skipped, each for its reason; every other
    file's every line is packed once, in order, under the budget."""
    files = [f for f, _, _ in generated]
    plan = plan_review(files, config(max_message_tokens=budget))
    skipped = {f.filename: reason for f, _, reason in generated if reason is not None}
    assert {s.path: s.reason for s in plan.skipped} == skipped
    for reason in set(skipped.values()):
        event(f"skipped: {reason}")
    found = read_messages(plan.messages)
    assert set(found) == {f.filename for f in files} - set(skipped)
    for file, hunks, reason in generated:
        if reason is not None:
            continue
        assert found[file.filename] == expected_rows(hunks)  # nothing lost, nothing twice
        whole = added_lines(f"+++ b/{file.filename}\n{file.patch}")[file.filename]
        split = [r for m in plan.messages for r in added_lines(m.text).get(file.filename, [])]
        assert split == whole  # the simulator agrees on every new-side line number
    event(f"split files: {len({m.files for m in plan.messages if m.part})}")
    for message in plan.messages:
        request = build_request(message, model="m")
        assert message.tokens == sum(estimate_tokens(m.content) for m in request.messages)
        if message.tokens > budget:  # only a single line too long for any message
            rows = [r for rows in read_messages([message]).values() for r in rows]
            assert len([r for r in rows if not r[2].startswith("\\")]) == 1
            assert message.part is not None
            event("a message holds one line longer than the budget")


# ------------------------------------------------------------------------- degradation


def _pr_files() -> list[ChangedFile]:
    return [
        simple("src/auth/session.py", added=5),
        simple("src/util/strings.py", added=5),
        simple("src/big_feature.py", added=60),
        simple("tests/test_strings.py", added=60),
        simple("docs/guide.md", added=200),
        simple("db/migrations/0042_add_index.sql", added=2),
    ]


def test_a_large_pr_reviews_the_riskiest_files_and_summarises_the_rest() -> None:
    plan = plan_review(_pr_files(), config(large_pr_files=4, large_pr_full_files=3))
    full = sorted(f for m in plan.messages if m.kind == "diff" for f in m.files)
    assert full == ["db/migrations/0042_add_index.sql", "src/auth/session.py", "src/big_feature.py"]
    assert plan.degraded
    assert plan.summarised == ("docs/guide.md", "src/util/strings.py", "tests/test_strings.py")
    summaries = [m for m in plan.messages if m.kind == "summary"]
    assert len(summaries) == 1 and summaries[0].files == plan.summarised
    assert parse_diff(summaries[0].text) == []  # statistics only, no diff lines
    assert "- docs/guide.md (modified): +200 -0 in 1 hunk(s)" in summaries[0].text
    assert summaries[0].tokens < plan.messages[0].tokens
    assert build_request(summaries[0], model="m").messages[0].content == SUMMARY_SYSTEM_PROMPT
    assert plan.note is not None
    assert "6 reviewable files" in plan.note and "3 riskiest" in plan.note
    assert "3 were summarised" in plan.note


def test_no_degradation_at_or_below_the_limit() -> None:
    for limit in (None, 6, 100):
        plan = plan_review(_pr_files(), config(large_pr_files=limit, large_pr_full_files=1))
        assert not plan.degraded and plan.summarised == () and plan.note is None
        assert all(m.kind == "diff" for m in plan.messages)


def test_skipped_files_do_not_count_towards_a_large_pr() -> None:
    files = [*_pr_files()[:3], *(simple(f"vendor/lib{i}.go") for i in range(50))]
    plan = plan_review(files, config(large_pr_files=3, large_pr_full_files=1))
    assert not plan.degraded and len(plan.skipped) == 50


def test_risk_prefers_source_sensitive_paths_and_deletions() -> None:
    def f(path: str, add: int = 10, rm: int = 0) -> ChangedFile:
        return ChangedFile(filename=path, additions=add, deletions=rm, changes=add + rm, patch="@@")

    assert risk(f("src/a.py")) > risk(f("tests/test_a.py")) > risk(f("docs/a.md"))
    assert risk(f("src/crypto/keys.py")) == 2 * risk(f("src/a.py"))
    assert risk(f("src/a.py", add=0, rm=10)) > risk(f("src/a.py", add=10, rm=0))
    assert risk(f("src/a.py", add=500)) > risk(f("src/a.py", add=5))
    assert risk(f("README.md", add=10_000)) < risk(f("src/a.py", add=100))


def test_a_headline_is_one_short_line_naming_the_touched_sections() -> None:
    patch = "@@ -1,2 +1,2 @@ def alpha():\n-a\n+b\n@@ -40 +40 @@ class Beta:\n-c\n+d"
    file = ChangedFile(
        filename="new.py", status="renamed", previous_filename="old.py", additions=2,
        deletions=2, changes=4, patch=patch,
    )  # fmt: skip
    line = headline(file)
    assert line == (
        "- new.py (renamed from old.py): +2 -2 in 2 hunk(s); touches def alpha(): | class Beta:\n"
    )
    long = headline(file.model_copy(update={"filename": "x/" * 300 + "y.py"}))
    assert len(long) == 300 and long.endswith("\n")


# ---------------------------------------------------------------------------- estimate


def _account(preset: str, packs: int = 1) -> Account:
    return Account(
        name="a", provider="p", base_url="http://x", api_key_env="K", plan=get_preset(preset),
        packs=packs,
    )  # fmt: skip


def test_estimate_charges_one_request_per_message_in_every_window() -> None:
    files = [simple(f"m{i}/f.py", added=40, width=70) for i in range(6)]
    plan = plan_review(files, config(max_message_tokens=1000))
    n = len(plan.messages)
    assert n > 1
    assert estimate(plan, _account("synthetic"), "hf:zai-org/GLM-4.6") == {"requests_5h": n * 1000}
    assert estimate(plan, _account("synthetic"), "gemini-flash") == {"requests_5h": n * 100}
    credits = estimate(plan, _account("synthetic-credits"), "glm")
    assert credits == {"requests_5h": n * 1000, "weekly_credits": n}
    peak = dt.datetime(2026, 3, 2, 7, 0, tzinfo=dt.UTC)  # 15:00 at UTC+8
    off = dt.datetime(2026, 3, 2, 1, 0, tzinfo=dt.UTC)
    zai = _account("zai-pro")
    assert estimate(plan, zai, "glm-5", when=peak) == {
        "prompts_5h": 3000 * n,
        "prompts_week": 3000 * n,
    }
    assert estimate(plan, zai, "glm-5", when=off)["prompts_5h"] == 2000 * n
    empty = ReviewPlan(messages=(), skipped=())
    assert estimate(empty, zai, "glm-5") == {"prompts_5h": 0, "prompts_week": 0}
    assert estimate(plan, _account("zai-developer"), "glm-5") == {}


# ----------------------------------------------------------------- parse_unified_diff


GIT_DIFF = """\
diff --git a/src/app.py b/src/app.py
index 83db48f..bf269f4 100644
--- a/src/app.py
+++ b/src/app.py
@@ -1,3 +1,3 @@ import os
 import os
--- a/looks/like/a/header
+++ b/looks/like/a/header
 x = 1
@@ -20 +20,2 @@ def main():
-    return 1
+    return 2
+    # done
\\ No newline at end of file
diff --git a/new.txt b/new.txt
new file mode 100644
index 0000000..3b18e51
--- /dev/null
+++ b/new.txt
@@ -0,0 +1 @@
+hello
diff --git a/gone.py b/gone.py
deleted file mode 100644
--- a/gone.py
+++ /dev/null
@@ -1,2 +0,0 @@
-a
-b
diff --git a/logo.png b/logo.png
new file mode 100644
index 0000000..e69de29
Binary files /dev/null and b/logo.png differ
diff --git "a/caf\\303\\251 menu.py" "b/caf\\303\\251 menu.py"
similarity index 90%
rename from "caf\\303\\251 menu.py"
rename to "caf\\303\\251 menu.py"
diff --git a/a b.txt b/c d.txt
similarity index 100%
rename from a b.txt
rename to c d.txt
diff --git a/run.sh b/run.sh
old mode 100644
new mode 100755
"""


def test_parse_git_diff_with_every_kind_of_file() -> None:
    files = {f.filename: f for f in parse_unified_diff(GIT_DIFF)}
    app = files["src/app.py"]
    assert (app.status, app.additions, app.deletions, app.changes) == ("modified", 3, 2, 5)
    assert app.patch is not None and app.patch.startswith("@@ -1,3 +1,3 @@ import os\n")
    assert app.patch.endswith("+    # done\n\\ No newline at end of file")
    assert files["new.txt"].status == "added" and files["new.txt"].patch == "@@ -0,0 +1 @@\n+hello"
    assert (files["gone.py"].status, files["gone.py"].deletions) == ("removed", 2)
    logo = files["logo.png"]
    assert (logo.status, logo.patch, logo.changes) == ("added", None, 0)
    assert files["café menu.py"].status == "renamed"
    assert files["café menu.py"].previous_filename == "café menu.py"
    moved = files["c d.txt"]
    assert (moved.status, moved.previous_filename, moved.patch) == ("renamed", "a b.txt", "")
    assert files["run.sh"].status == "modified" and files["run.sh"].patch == ""
    assert list(files) == [
        "src/app.py", "new.txt", "gone.py", "logo.png", "café menu.py", "c d.txt", "run.sh",
    ]  # fmt: skip
    reasons = {
        s.path: s.reason for s in plan_review(list(files.values()), PlanningConfig()).skipped
    }
    assert reasons == {
        "gone.py": "deleted",
        "logo.png": "binary (no patch)",
        "c d.txt": "renamed without changes",
        "café menu.py": "renamed without changes",
        "run.sh": "no content changes (no diff hunks)",
    }


def test_parse_plain_diff_u_and_diff_r() -> None:
    text = (
        "Only in old: stray.txt\n"
        "diff -ruN old/a.c new/a.c\n"
        "--- old/a.c\t2024-01-01 10:00:00.000000000 +0000\n"
        "+++ new/a.c\t2024-01-02 10:00:00.000000000 +0000\n"
        "@@ -3,2 +3,2 @@\n-int x;\n+long x;\n return;\n"
        "diff -ruN old/b.c new/b.c\n"
        "--- old/b.c\t1970-01-01 00:00:00.000000000 +0000\n"
        "+++ new/b.c\t2024-01-02 10:00:00.000000000 +0000\n"
        "@@ -0,0 +1 @@\n+int y;\n"
        "Binary files old/i.png and new/i.png differ\n"
    )
    files = parse_unified_diff(text)
    assert [(f.filename, f.status, f.additions, f.deletions) for f in files] == [
        ("new/a.c", "modified", 1, 1),
        ("new/b.c", "added", 1, 0),
        ("new/i.png", "modified", 0, 0),
    ]
    assert files[0].patch == "@@ -3,2 +3,2 @@\n-int x;\n+long x;\n return;"
    assert files[2].patch is None
    assert parse_unified_diff("just prose\n") == []


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout


def test_parse_real_git_output_and_plan_it(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "t@example.com")
    _git(repo, "config", "user.name", "t")
    (repo / "src").mkdir()
    code = "".join(f"def f{i}():\n    return {i}\n\n" for i in range(40))
    (repo / "src" / "mod.py").write_text(code)
    (repo / "old name.txt").write_text("alpha\nbeta\ngamma\ndelta\n")
    (repo / "gone.txt").write_text("bye\n")
    (repo / "img.bin").write_bytes(bytes(range(256)))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "base")
    (repo / "src" / "mod.py").write_text(code.replace("return 3\n", "return -3\n").replace(
        "return 30\n", "return 30  # changed\n"))  # fmt: skip
    _git(repo, "mv", "old name.txt", "new name.txt")
    (repo / "new name.txt").write_text("alpha\nbeta\ngamma\ndelta\nepsilon\n")
    (repo / "gone.txt").unlink()
    (repo / "img.bin").write_bytes(bytes(range(255, -1, -1)))
    (repo / "package-lock.json").write_text("{}\n")
    _git(repo, "add", "-A")
    text = _git(repo, "diff", "--cached", "-M", "--no-color")
    files = {f.filename: f for f in parse_unified_diff(text)}
    assert {n: f.status for n, f in files.items()} == {
        "gone.txt": "removed",
        "img.bin": "modified",
        "new name.txt": "renamed",
        "package-lock.json": "added",
        "src/mod.py": "modified",
    }
    assert files["new name.txt"].previous_filename == "old name.txt"
    assert files["img.bin"].patch is None
    mod = files["src/mod.py"]
    assert (mod.additions, mod.deletions) == (2, 2) and mod.patch and mod.patch.count("@@ ") == 4
    plan = plan_review(list(files.values()), PlanningConfig())
    assert {s.path: s.reason for s in plan.skipped} == {
        "gone.txt": "deleted",
        "img.bin": "binary (no patch)",
        "package-lock.json": "lockfile",
    }
    reviewed = added_lines(plan.messages[0].text)
    assert reviewed["src/mod.py"] == [(11, "    return -3"), (92, "    return 30  # changed")]
    assert reviewed["new name.txt"] == [(5, "epsilon")]


def test_estimate_on_a_credit_plan_is_priced_at_the_highest_time_factor() -> None:
    """A credit window is charged each message's tokens plus the output bound at the
    plan's highest time factor, whatever the hour: the upper estimate a grant reserves.
    Expected figures from the preset's price table (credits per 10,000 tokens)."""
    files = [simple(f"m{i}/f.py", added=40, width=70) for i in range(6)]
    plan = plan_review(files, config(max_message_tokens=1000))
    zai = _account("zai-pro-v3")
    price = next(p for p in zai.plan.prices if p.pattern == "glm-5.1")
    peak = dt.datetime(2026, 3, 2, 7, 0, tzinfo=dt.UTC)  # Monday 15:00 at UTC+8
    off = dt.datetime(2026, 3, 2, 1, 0, tzinfo=dt.UTC)  # Monday 09:00 at UTC+8
    out = 512
    at_peak = estimate(plan, zai, "glm-5.1", when=peak, output_tokens=out)
    at_off = estimate(plan, zai, "glm-5.1", when=off, output_tokens=out)
    assert at_off == at_peak
    # milli-credits: credits per 10,000 tokens x 1000 / 10,000 = price / 10 per token
    expected = sum((m.tokens * price.input + out * price.output) / 10 for m in plan.messages)
    n = len(plan.messages)
    for window in ("credits_5h", "credits_week"):
        assert expected <= at_peak[window] <= expected + 2 * n  # rounded up per message
