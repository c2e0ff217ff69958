"""Incremental review's parts, each on its own: which files a push leaves out, what the
review says about it, what Redis keeps, and the forge calls behind it (against the
fake forges). The whole path is `tests/test_incremental_pipeline.py`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import pytest
import redis as redis_py
from operator_fixtures import DIFF, deployment, invoke, write_config

from scheduler.config.loader import load_settings
from scheduler.intake import PLAN_JOB
from scheduler.sandbox.github import serve_fake_github
from scheduler.sandbox.gitlab import MrFile, serve_fake_gitlab
from scheduler.state.jobs import fetch_job
from scheduler.state.keys import Keys
from workers.forge.github import GitHubClient, GitHubNotFound
from workers.forge.gitlab import GitLabClient, GitLabNotFound
from workers.forge.sinks import _lines, render_body, scope_line
from workers.incremental import Compared, select
from workers.review.changes import ChangedFile
from workers.review.model import Review, ReviewComment
from workers.review.plan import PlannedMessage, ReviewPlan
from workers.review.scope import EarlierReview, ReviewScope
from workers.review_record import (
    Seen,
    SeenFile,
    content_key,
    read_seen,
    record_plan,
    record_posted,
    record_review,
)

A, B, C = "a" * 40, "b" * 40, "c" * 40
PATCH = "@@ -0,0 +1,2 @@\n+x = 1\n+y = 2"


def gh(path: str, blob: str | None, **kw: object) -> ChangedFile:
    return ChangedFile.model_validate({"filename": path, "patch": PATCH, "sha": blob, **kw})


def seen_at(head: str, files: dict[str, str | None], where: str = "https://gh/r/1") -> Seen:
    entries = {
        p: SeenFile(head=head, blob=b, reviewed_at=head, location=where) for p, b in files.items()
    }
    return Seen(files=entries, last=head)


# --- which files a push leaves out ----------------------------------------------------


def test_a_file_with_the_reviewed_blob_is_carried_and_the_rest_reviewed() -> None:
    files = [gh("a.py", "1" * 40), gh("b.py", "2" * 40), gh("new.py", "3" * 40)]
    seen = seen_at(A, {"a.py": "1" * 40, "b.py": "9" * 40})
    chosen = select(files, seen, {}, local=False)
    assert [f.filename for f in chosen.review] == ["b.py", "new.py"]
    assert chosen.scope is not None
    assert chosen.scope.carried == ("a.py",) and chosen.scope.covered == ("b.py", "new.py")
    assert chosen.scope.since == A and not chosen.scope.diverged
    assert chosen.scope.earlier == (EarlierReview(head=A, location="https://gh/r/1"),)
    assert chosen.content == {"a.py": "1" * 40, "b.py": "2" * 40, "new.py": "3" * 40}


def test_nothing_seen_or_a_full_review_plans_every_file() -> None:
    files = [gh("a.py", "1" * 40)]
    for seen in (None, Seen(), Seen(files={}, last=A)):
        chosen = select(files, seen, {}, local=False)
        assert chosen.review == files and chosen.scope is None


def test_without_blobs_a_direct_comparison_decides() -> None:
    """GitLab: no blob ids; a path absent from the tree comparison is unchanged, and a
    comparison that could not be made (None) vouches for nothing."""
    files = [gh("a.py", None), gh("b.py", None), gh("c.py", None)]
    seen = seen_at(A, {"a.py": None, "b.py": None, "c.py": None})
    chosen = select(files, seen, {A: Compared(frozenset({"b.py"}))}, local=False)
    assert [f.filename for f in chosen.review] == ["b.py"]
    assert select(files, seen, {A: Compared(None)}, local=False).review == files
    assert select(files, seen, {}, local=False).review == files


def test_a_rename_since_the_review_is_reviewed_again() -> None:
    moved = gh("new_name.py", None, status="renamed", previous_filename="a.py")
    seen = seen_at(A, {"new_name.py": None})
    chosen = select([moved], seen, {A: Compared(frozenset({"a.py"}))}, local=False)
    assert chosen.review == [moved]


def test_a_force_push_is_said_and_files_matched_by_blob() -> None:
    files = [gh("a.py", "1" * 40), gh("b.py", "5" * 40)]
    seen = seen_at(B, {"a.py": "1" * 40, "b.py": "2" * 40})
    chosen = select(files, seen, {B: Compared(None, diverged=True)}, local=False)
    assert [f.filename for f in chosen.review] == ["b.py"]
    assert chosen.scope is not None and chosen.scope.diverged


def test_a_local_diff_is_matched_by_its_diff_text() -> None:
    same, changed = gh("a.py", None), gh("b.py", None, patch=PATCH + "\n+z = 3")
    assert content_key(same, local=False) is None
    key = content_key(same, local=True)
    assert key is not None and key.startswith("diff:")
    assert content_key(gh("a.py", "ABCDEF1"), local=True) == "abcdef1"
    seen = seen_at(A, {"a.py": key, "b.py": content_key(gh("b.py", None), local=True)})
    assert select([same, changed], seen, {}, local=True).review == [changed]


def test_the_earlier_reviews_are_ranked_by_how_many_files_they_cover() -> None:
    entries = {
        "a.py": SeenFile(head=B, blob="1", reviewed_at=A, location="u1"),
        "b.py": SeenFile(head=B, blob="1", reviewed_at=B, location="u2"),
        "c.py": SeenFile(head=B, blob="1", reviewed_at=B, location="u2"),
    }
    files = [gh(p, "1") for p in entries]
    scope = select(files, Seen(files=entries, last=B), {}, local=False).scope
    assert scope is not None and [e.location for e in scope.earlier] == ["u2", "u1"]
    assert scope.covered == () and len(scope.carried) == 3


def test_a_blob_id_must_be_hex() -> None:
    with pytest.raises(ValueError):
        ChangedFile(filename="a.py", sha="not-a-sha")


# --- what the review says -------------------------------------------------------------


def test_the_review_names_what_it_covers_and_links_the_earlier_one() -> None:
    scope = ReviewScope(
        since=A,
        covered=("src/b.py",),
        carried=("src/a.py", "src/c.py"),
        earlier=(EarlierReview(head=A, location="https://github.com/o/r/pull/1#r-1"),),
    )
    line = scope_line(scope)
    assert line == (
        f"This review covers 1 file changed since `{A[:12]}` (`src/b.py`); the earlier "
        f"review [at `{A[:12]}`](https://github.com/o/r/pull/1#r-1) covers the other 2."
    )
    review = Review(pr="o/r#1", head_sha=B, summary="Fine.", scope=scope)
    body = render_body(review, "<!-- m -->")
    assert body.split("\n\n")[:3] == ["<!-- m -->", line, "Fine."]


def test_a_location_that_is_no_plain_url_is_shown_as_code() -> None:
    """A Redis key (the log sink), or anything that could close the markdown link."""
    hostile = "https://x/(y) [z](javascript:alert(1))"
    scope = ReviewScope(
        since=A,
        covered=tuple(f"f{i}.py" for i in range(7)),
        carried=("a.py",),
        earlier=(
            EarlierReview(head=A, location=hostile),
            EarlierReview(head=B, location="redis:k#a"),
        ),
        diverged=True,
    )
    line = scope_line(scope)
    assert "covers 7 files whose content changed since" in line and "f0.py" not in line
    assert "the history was rewritten" in line and "reviews" in line
    assert "](https://x/(y)" not in line and "`redis:k#a`" in line
    assert scope_line(scope.model_copy(update={"carried": ()})).endswith("matched by content).")


# --- what Redis keeps -----------------------------------------------------------------


def test_a_posted_review_records_its_files_and_keeps_the_carried_ones_links(
    redis: redis_py.Redis, unique: str
) -> None:
    keys, pr = Keys(f"t:{unique}"), f"{unique}/app#1"
    record_plan(redis, keys, pr, A, {"a.py": "1", "b.py": "2", "c.py": "3"})
    plan = ReviewPlan(
        messages=(
            PlannedMessage(index=0, files=("a.py", "b.py"), text="x", tokens=1),
            PlannedMessage(index=1, files=("c.py",), text="y", tokens=1, part=(1, 2)),
            PlannedMessage(index=2, files=("c.py",), text="z", tokens=1, part=(2, 2)),
        ),
        skipped=(),
    )
    review = Review(pr=pr, head_sha=A, summary="s")
    assert record_review(redis, keys, review, plan, [0, 1], "https://u/1") == 2  # c.py half done
    seen = read_seen(redis, keys, pr)
    assert seen.last == A and set(seen.files) == {"a.py", "b.py"}
    assert seen.files["a.py"] == SeenFile(head=A, blob="1", reviewed_at=A, location="https://u/1")
    assert record_review(redis, keys, review, plan, [0, 1, 2], "x") == 0  # a rerun: done already

    record_plan(redis, keys, pr, C, {"zzz": None})  # a head superseded before posting
    record_plan(redis, keys, pr, B, {"a.py": "1", "b.py": "7"})
    fields = {k.decode() for k in cast(list[bytes], redis.hkeys(keys.seen(pr)))}
    assert {f for f in fields if f.startswith("plan:")} == {f"plan:{B}"}
    record_posted(redis, keys, pr, B, reviewed=["b.py"], carried=["a.py"], location="https://u/2")
    seen = read_seen(redis, keys, pr)
    assert seen.last == B and seen.heads() == [B]
    assert seen.files["a.py"] == SeenFile(head=B, blob="1", reviewed_at=A, location="https://u/1")
    assert seen.files["b.py"].location == "https://u/2"
    assert 0 < cast(int, redis.ttl(keys.seen(pr))) <= keys.pr_ttl_s
    assert keys.seen(pr) in keys.pr_keys(pr)

    redis.hset(keys.seen(pr), "f:bad.py", "{not json")
    assert "bad.py" not in read_seen(redis, keys, pr).files  # read again, never a crash


# --- the forge calls ------------------------------------------------------------------


def test_github_compare_and_contents_against_the_fake() -> None:
    with serve_fake_github() as fake:
        files = [gh("a.py", None), gh("b.py", None)]
        fake.control.add_pr(
            "o", "r", 1, A, files=files, contents={".gitattributes": "*.js -diff\n"}
        )
        fake.control.add_pr(
            "o", "r", 1, B, files=[files[0], gh("b.py", None, patch="@@ -1 +1 @@\n+q")]
        )
        client = GitHubClient(fake.token, base_url=fake.url)
        found = client.compare("o", "r", A, B)
        assert (found.status, found.ahead_by, [f.filename for f in found.files]) == (
            "ahead",
            1,
            ["b.py"],
        )
        assert found.files[0].sha is not None and found.complete
        assert client.file_text("o", "r", ".gitattributes", A, max_bytes=100) == "*.js -diff\n"
        assert client.file_text("o", "r", ".gitattributes", A, max_bytes=3) is None  # too big
        assert client.file_text("o", "r", "missing", A, max_bytes=100) is None
        fake.control.faults(compare_gone=1)
        with pytest.raises(GitHubNotFound):
            client.compare("o", "r", A, B)
        with pytest.raises(ValueError):
            client.compare("o", "r", "../x", B)
        (listed_b,) = [f for f in client.list_files("o", "r", 1).files if f.filename == "b.py"]
        assert listed_b.sha == client.compare("o", "r", A, B).files[0].sha  # one blob id
        client.close()


def test_gitlab_compare_is_direct_and_its_timeout_vouches_for_nothing() -> None:
    def mr(path: str, text: str) -> MrFile:
        return MrFile(old_path=path, new_path=path, diff=f"@@ -0,0 +1 @@\n+{text}", new_file=True)

    with serve_fake_gitlab() as fake:
        fake.control.add_mr("g/p", 2, A, files=[mr("a.py", "1"), mr("b.py", "1")])
        fake.control.add_mr(
            "g/p",
            2,
            B,
            files=[mr("a.py", "1"), mr("b.py", "2")],
            base_sha="f" * 40,
            repo_files={".gitattributes": "x -diff\n"},
        )
        client = GitLabClient(fake.token, base_url=fake.url)
        found = client.compare("g/p", A, B)
        assert sorted(d.new_path for d in found.diffs) == [".gitattributes", "b.py"]
        assert not found.compare_timeout
        assert client.raw_file("g/p", ".gitattributes", B, max_bytes=100) == b"x -diff\n"
        with pytest.raises(GitLabNotFound):
            client.raw_file("g/p", ".gitattributes", A, max_bytes=100)
        with pytest.raises(GitLabNotFound):
            client.compare("g/p", "d" * 40, B)
        fake.control.faults(compare_timeout=1)
        timed_out = client.compare("g/p", A, B)
        assert timed_out.compare_timeout and timed_out.diffs == ()
        client.close()


# --- `reviewq enqueue --full` ---------------------------------------------------------


def test_enqueue_full_asks_for_a_whole_review(tmp_path: Path, redis_url: str, unique: str) -> None:
    config = write_config(tmp_path, redis_url, f"q-{unique}")
    diff = tmp_path / "pr.diff"
    diff.write_text(DIFF)
    result = invoke(
        config, "enqueue", "--diff", str(diff), "--pr", f"{unique}-x", "--full", "--json"
    )
    assert result.exit_code == 0 and json.loads(result.output)["queued"], result.output
    _, dep = deployment(config)
    ids = [i.decode() for i in cast(list[bytes], dep.redis.lrange(f"rq:queue:q-{unique}", 0, -1))]
    (job,) = [j for j in (fetch_job(i, dep.redis) for i in ids) if j.func_name == PLAN_JOB]
    assert job.args[2] == {"kind": "diff", "text": DIFF, "full": True}
    dep.close()


# --- config -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "incremental"), [("", True), ("[planning]\nincremental = false\n", False)]
)
def test_incremental_is_on_unless_the_config_turns_it_off(
    tmp_path: Path, extra: str, incremental: bool
) -> None:
    """A config file without the key reviews pushes incrementally (issue 16's default);
    `[planning] incremental = false` brings back a full review per push."""
    config = write_config(tmp_path, "redis://localhost:1/0", "q", extra=extra)
    assert load_settings(config, env={}).planning.incremental is incremental


def test_the_scope_line_at_its_edges() -> None:
    """Exactly five files are named, none when none; three earlier reviews linked of
    four; an http:// URL (and one with a capital X) is a link; an earlier review
    without a location is its commit alone."""
    five = tuple(f"f{i}.py" for i in range(5))
    assert "(`f0.py`, `f1.py`, `f2.py`, `f3.py`, `f4.py`)" in scope_line(
        ReviewScope(since=A, covered=five)
    )
    none = scope_line(ReviewScope(since=A, covered=(), carried=("a.py",)))
    want = f"This review covers 0 files changed since `{A[:12]}`; an earlier review covers"
    assert none == want + " the other 1."
    heads = ["a" * 40, "b" * 40, "c" * 40, "d" * 40]
    four = tuple(
        EarlierReview(head=h, location=f"http://gl.example/X/{i}") for i, h in enumerate(heads)
    )
    line = scope_line(ReviewScope(since=A, covered=("x.py",), carried=("y.py",), earlier=four))
    assert line.count("](http://gl.example/X/") == 3 and "dddddddddddd" not in line, line
    bare = scope_line(
        ReviewScope(since=A, carried=("y.py",), earlier=(EarlierReview(head=B, location=None),))
    )
    assert bare.endswith(f"; the earlier review at `{B[:12]}` covers the other 1."), bare


def test_a_folded_comment_names_its_line_or_range() -> None:
    """The heading of a comment folded into the body: a range as `lines 10-12`, a
    range of one line (or none) as that line."""
    spans = {(10, 12): "lines 10\u201312", (12, 12): "line 12", (None, 12): "line 12"}
    for (start, end), want in spans.items():
        comment = ReviewComment(path="a.py", line=end, start_line=start, body="x")
        assert _lines(comment) == want, (start, end)
