"""Incremental review on push, end to end with real parts only.

The pipeline of `tests/test_pipeline.py` (real Redis, spawned RQ workers, the waker,
the Lua limiter, the provider simulator as the referee of what was sent), with the
fake GitHub or the fake GitLab. Each file of these PRs fills a message of its own
(`PLANNING`), so the simulator's request count is the number of files reviewed.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, cast

import pytest
import test_pipeline
from test_pipeline import (
    KEY_ENV,
    Pipeline,
    PipelineFactory,
    file_patch,
    fixed,
    plan_of,
    unified_diff,
)

from scheduler.config.planning import PlanningConfig
from scheduler.intake import enqueue_pr
from scheduler.sandbox import DEV_KEY
from scheduler.sandbox.github import FakeGitHubServer, serve_fake_github
from scheduler.sandbox.gitlab import MrFile, serve_fake_gitlab
from scheduler.state.refs import PullRequestRef
from workers.forge.sinks import review_marker
from workers.review.changes import ChangedFile

pytestmark = pytest.mark.slow
pipeline = test_pipeline.pipeline  # the fixture, shared with the pipeline tests

TOKEN_ENV = "REVIEWQ_INCREMENTAL_TOKEN"
# Room for a few of these files per message, whatever the system prompt's length.
PLANNING = PlanningConfig(max_message_tokens=2000)
FILES = ["src/a.py", "src/b.py", "src/c.py", "src/d.py"]
COMPARE = "GET /repos/{owner}/{repo}/compare/{basehead}"
CONTENTS = "GET /repos/{owner}/{repo}/contents/{path}"
ATTRIBUTES = "*.gen.py linguist-generated\n"


def gh_files(lines: dict[str, int]) -> list[ChangedFile]:
    """One added file per path, `lines` long: a different length is new content."""
    return [
        ChangedFile(filename=p, status="added", additions=n, patch=file_patch(p, n))
        for p, n in lines.items()
    ]


def requests(pl: Pipeline) -> int:
    """Chat requests the simulator answered: one per message sent."""
    return int(pl.stats()["requests"])


def wait_head(pl: Pipeline, pr: str, sha: str, timeout_s: float = 40) -> list[str]:
    """Wait until `sha`'s review is done; return the files its messages held."""
    pl.wait(
        lambda: (
            (m := pl.admission.read_meta(pr)) is not None
            and m.head_sha == sha
            and m.status == "done"
        ),
        timeout_s,
        f"{pr} at {sha} to be done",
    )
    view = pl.view(pr)
    assert all(s.status == "done" for s in view.current().values())
    bodies = cast(dict[bytes, bytes], pl.redis.hgetall(pl.admission.keys.body(pr)))
    held = {f for mid in view.current() for f in json.loads(bodies[mid.encode()])["files"]}
    return sorted(held)


def planned(pl: Pipeline, planning: PlanningConfig = PLANNING) -> Pipeline:
    """The pipeline with this test's planning, before its workers start."""
    pl.spec = dataclasses.replace(pl.spec, planning=planning)
    return pl


def sent(pl: Pipeline, pr: str) -> int:
    """Messages of every head of `pr` so far, which the simulator must have answered."""
    return len(pl.view(pr).messages)


def github_review(fake: FakeGitHubServer, ref: PullRequestRef) -> dict[str, Any]:
    (found,) = [r for r in fake.control.reviews() if r["commit_id"] == ref.head_sha]
    assert found["body"].startswith(review_marker(ref.id, ref.head_sha))
    return found


def test_github_pushes_review_only_what_changed_and_full_reviews_all(
    pipeline: PipelineFactory, unique: str
) -> None:
    """Open: four files. A push that changes one and adds one reviews those two, says
    so and links the first review. A force push on which one file's content differs
    from the reviewed head (others rebased unchanged) reviews that one file. `--full`
    (the source's `full`) reviews all five again."""
    with serve_fake_github() as fake:
        pl = pipeline(
            plan=plan_of(unique),
            latency=fixed(0.2),
            sink="github",
            github_url=fake.url,
            github_token_env=TOKEN_ENV,
            env={KEY_ENV: DEV_KEY, TOKEN_ENV: fake.token},
        )
        pl = planned(pl)
        pl.start_workers(2)
        owner, first = unique, {p: 9 for p in FILES}
        fake.control.add_pr(owner, "app", 3, "a" * 40, files=gh_files(first))
        ref = PullRequestRef(
            id=f"{owner}/app#3", head_sha="a" * 40, owner=owner, repo="app", number=3
        )
        pl.enqueue(ref, {"kind": "github"})
        assert wait_head(pl, ref.id, ref.head_sha) == FILES
        full = sent(pl, ref.id)
        assert requests(pl) == full
        link = github_review(fake, ref)["html_url"]

        second = {**first, "src/b.py": 12, "src/e.py": 5}
        contents = {".gitattributes": ATTRIBUTES}
        fake.control.add_pr(owner, "app", 3, "b" * 40, files=gh_files(second), contents=contents)
        ref2 = ref.model_copy(update={"head_sha": "b" * 40})
        pl.enqueue(ref2, {"kind": "github"})
        assert wait_head(pl, ref.id, ref2.head_sha) == ["src/b.py", "src/e.py"]
        assert requests(pl) == sent(pl, ref.id)
        body = github_review(fake, ref2)["body"]
        assert f"This review covers 2 files changed since `{'a' * 12}`" in body
        assert f"the earlier review [at `{'a' * 12}`]({link}) covers the other 3." in body
        scope = pl.admission.read_meta(ref.id).plan["scope"]  # type: ignore[union-attr]
        assert scope["carried"] == ["src/a.py", "src/c.py", "src/d.py"]
        assert scope["diverged"] is False

        third = {**second, "src/c.py": 7}
        fake.control.add_pr(owner, "app", 3, "c" * 40, files=gh_files(third), force=True)
        ref3 = ref.model_copy(update={"head_sha": "c" * 40})
        pl.enqueue(ref3, {"kind": "github"})
        assert wait_head(pl, ref.id, ref3.head_sha) == ["src/c.py"]
        assert requests(pl) == sent(pl, ref.id) == full + 2
        body = github_review(fake, ref3)["body"]
        assert "This review covers 1 file whose content changed since `bbbbbbbbbbbb`" in body
        assert "the history was rewritten" in body
        assert "the earlier reviews [at `aaaaaaaaaaaa`]" in body  # a, d from the first
        assert "[at `bbbbbbbbbbbb`]" in body  # b, e from the second

        assert enqueue_pr(pl.admission, ref3, {"kind": "github", "full": True}, again=True)
        assert wait_head(pl, ref.id, ref3.head_sha) == sorted(third)
        assert requests(pl) == sent(pl, ref.id)
        assert pl.admission.read_meta(ref.id).plan["scope"] is None  # type: ignore[union-attr]
        assert fake.control.requests_to(COMPARE) == 2  # the two pushes after a review
        assert fake.control.requests_to(CONTENTS) == 4  # once per plan


def test_incremental_off_reviews_every_file_of_every_push(
    pipeline: PipelineFactory, unique: str
) -> None:
    """`[planning] incremental = false`: a push pays for every file again (local diffs)."""
    planning = PlanningConfig(max_message_tokens=2000, incremental=False)
    pl = planned(pipeline(plan=plan_of(unique), latency=fixed(0.1)), planning)
    pl.start_workers(2)
    ref = PullRequestRef(id=f"{unique}/off#1", head_sha="1" * 40, forge="local")
    pl.enqueue(ref, {"kind": "diff", "text": unified_diff(FILES)})
    wait_head(pl, ref.id, ref.head_sha)
    moved = ref.model_copy(update={"head_sha": "2" * 40})
    pl.enqueue(moved, {"kind": "diff", "text": unified_diff([*FILES, "src/e.py"])})
    assert wait_head(pl, ref.id, moved.head_sha) == [*FILES, "src/e.py"]
    assert requests(pl) == sent(pl, ref.id)
    review = pl.review(ref.id, moved.head_sha)
    assert review is not None and review.scope is None


def test_local_diff_pushes_are_incremental_by_default(
    pipeline: PipelineFactory, unique: str
) -> None:
    """The same two heads with the default: the second reviews only the new file."""
    pl = planned(pipeline(plan=plan_of(unique), latency=fixed(0.1)))
    pl.start_workers(2)
    ref = PullRequestRef(id=f"{unique}/on#1", head_sha="1" * 40, forge="local")
    pl.enqueue(ref, {"kind": "diff", "text": unified_diff(FILES)})
    wait_head(pl, ref.id, ref.head_sha)
    moved = ref.model_copy(update={"head_sha": "2" * 40})
    pl.enqueue(moved, {"kind": "diff", "text": unified_diff([*FILES, "src/e.py"])})
    assert wait_head(pl, ref.id, moved.head_sha) == ["src/e.py"]
    assert requests(pl) == sent(pl, ref.id)
    assert len(pl.view(ref.id).current()) == 1
    review = pl.review(ref.id, moved.head_sha)
    assert review is not None and review.scope is not None
    assert review.scope.covered == ("src/e.py",) and len(review.scope.carried) == 4
    assert (
        review.scope.earlier[0].location == f"redis:{pl.spec.prefix}:reviewlog:{ref.id}#{'1' * 40}"
    )


def mr_files(lines: dict[str, int]) -> list[MrFile]:
    return [
        MrFile(old_path=p, new_path=p, diff=file_patch(p, n), new_file=True)
        for p, n in lines.items()
    ]


def test_gitlab_pushes_compare_the_trees_and_review_only_changed_files(
    pipeline: PipelineFactory, unique: str
) -> None:
    """GitLab's diffs name no blobs: the reviewed head and the new one are compared
    directly (`repository/compare?straight=true`), so a push and a rebase onto a new
    base alike review only the files whose content differs. `.gitattributes` is read
    from the head once per plan."""
    with serve_fake_gitlab() as fake:
        pl = pipeline(
            plan=plan_of(unique),
            latency=fixed(0.2),
            sink="forge",
            gitlab_url=fake.url,
            gitlab_token_env=TOKEN_ENV,
            env={KEY_ENV: DEV_KEY, TOKEN_ENV: fake.token},
        )
        pl = planned(pl)
        pl.start_workers(2)
        project, first = f"{unique}/platform/app", {p: 9 for p in FILES}
        fake.control.add_mr(project, 5, "a" * 40, files=mr_files(first))
        ref = PullRequestRef(
            id=f"{project}!5",
            head_sha="a" * 40,
            forge="gitlab",
            owner=f"{unique}/platform",
            repo="app",
            number=5,
        )
        source = {"kind": "gitlab", "project": project, "iid": 5}
        pl.enqueue(ref, source)
        assert wait_head(pl, ref.id, ref.head_sha) == FILES

        second = {**first, "src/d.py": 11}
        attributes = {".gitattributes": ATTRIBUTES}
        fake.control.add_mr(project, 5, "b" * 40, files=mr_files(second), repo_files=attributes)
        ref2 = ref.model_copy(update={"head_sha": "b" * 40})
        pl.enqueue(ref2, source)
        assert wait_head(pl, ref.id, ref2.head_sha) == ["src/d.py"]

        third = {**second, "src/a.py": 3}  # rebased onto a new base, a.py rewritten
        fake.control.add_mr(project, 5, "c" * 40, files=mr_files(third), base_sha="f" * 40)
        ref3 = ref.model_copy(update={"head_sha": "c" * 40})
        pl.enqueue(ref3, source)
        assert wait_head(pl, ref.id, ref3.head_sha) == ["src/a.py"]
        assert requests(pl) == sent(pl, ref.id)
        stats = fake.control.stats()["by_route"]
        assert sum(stats["GET /projects/:id/repository/compare"].values()) == 2
        raw = stats["GET /projects/:id/repository/files/:file_path/raw"]
        assert raw == {"404": 2, "200": 1}  # .gitattributes at each head: only b has one
        notes = [n["body"] for n in fake.control.notes() if n["position"] is None]
        last = next(n for n in notes if n.startswith(review_marker(ref.id, ref3.head_sha)))
        assert f"This review covers 1 file changed since `{'b' * 12}` (`src/a.py`)" in last
        assert "covers the other 3." in last or "cover the other 3." in last
