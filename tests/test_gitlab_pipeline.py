"""A GitLab merge request reviewed end to end, with real parts only.

The pipeline of `tests/test_pipeline.py` (real Redis, spawned RQ workers, the waker,
the Lua limiter, the provider simulator as the referee of the budget), with the fake
GitLab in place of the fake GitHub. The MR enters as the webhook parser reads a real
GitLab `open` delivery (woodpecker's fixture, its ids rewritten to this MR).

Then the same under GitLab's faults: 429s with `Retry-After` or only
`RateLimit-Reset`, a 502 after the summary note was stored, and bursts of 502s. The
invariant is one summary note per MR head, each inline comment once; and no job holds
a worker while it waits: every plan and finalize run ends within a fraction of the
wait GitLab asked for, and the waker runs the next one when it is due.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import pytest
import test_pipeline
from rq.job import Job
from test_pipeline import (
    APP_PATCH,
    KEY_ENV,
    UTIL_PATCH,
    Pipeline,
    PipelineFactory,
    fixed,
    plan_of,
)
from webhook_fixtures import gitlab_fixture

from scheduler.admission import FINALIZE_JOB, job_id_for
from scheduler.intake import enqueue_pr, plan_job_id
from scheduler.sandbox import DEV_KEY
from scheduler.sandbox.gitlab import FakeGitLabServer, MrFile, serve_fake_gitlab
from scheduler.state.jobs import fetch_job
from scheduler.state.refs import PullRequestRef
from scheduler.webhook.events import Enqueue
from scheduler.webhook.gitlab import gitlab_action
from workers.forge.sinks import review_marker

pytestmark = pytest.mark.slow
pipeline = test_pipeline.pipeline  # the fixture, shared with the GitHub pipeline tests

TOKEN_ENV = "REVIEWQ_PIPELINE_GL_TOKEN"
NOTES = "POST /projects/:id/merge_requests/:iid/notes"
THREADS = "POST /projects/:id/merge_requests/:iid/discussions"
DIFFS = "GET /projects/:id/merge_requests/:iid/diffs"


def mr_files() -> list[MrFile]:
    """Two reviewable files, a lockfile and a binary (GitLab lists it with no diff)."""
    return [
        MrFile(old_path="src/app.py", new_path="src/app.py", diff=APP_PATCH),
        MrFile(old_path="src/util.py", new_path="src/util.py", diff=UTIL_PATCH, new_file=True),
        MrFile(
            old_path="package-lock.json",
            new_path="package-lock.json",
            diff="@@ -1 +1 @@\n-{}\n+{ }",
        ),
        MrFile(old_path="assets/logo.png", new_path="assets/logo.png", new_file=True),
    ]


@pytest.fixture
def fake_gitlab() -> Iterator[FakeGitLabServer]:
    with serve_fake_gitlab() as server:
        yield server


def gitlab_pipeline(
    pipeline: PipelineFactory, fake: FakeGitLabServer, unique: str, iid: int
) -> tuple[Pipeline, Enqueue]:
    pl = pipeline(
        plan=plan_of(unique),
        latency=fixed(0.5),
        sink="forge",
        gitlab_url=fake.url,
        gitlab_token_env=TOKEN_ENV,
        env={KEY_ENV: DEV_KEY, TOKEN_ENV: fake.token},
    )
    project, sha = f"{unique}/platform/app", f"{iid:04d}feed"
    fake.control.add_mr(project, iid, sha, files=mr_files())
    action = gitlab_action(gitlab_fixture("Opened", project=project, iid=iid, sha=sha), "d1")
    assert isinstance(action, Enqueue) and action.source["kind"] == "gitlab"
    return pl, action


def check_posted(fake: FakeGitLabServer, ref: PullRequestRef) -> dict[str, Any]:
    """One summary note on the head, marked; the simulator's comments (the first added
    line of each hunk) as inline threads at those lines; nothing folded."""
    notes = fake.control.notes()
    marker = review_marker(ref.id, ref.head_sha)
    (summary,) = [n for n in notes if n["body"].startswith(marker)]
    body: str = summary["body"]
    assert "`package-lock.json`: lockfile" in body and "`assets/logo.png`: binary" in body
    assert "could not place" not in body
    threads = sorted(
        (n["position"]["new_path"], n["position"]["new_line"]) for n in notes if n["position"]
    )
    assert threads == [("src/app.py", 11), ("src/util.py", 1)]
    assert all(n["position"]["head_sha"] == ref.head_sha for n in notes if n["position"])
    assert len(notes) == 3
    return summary


def test_a_gitlab_merge_request_gets_one_review_posted_on_its_head(
    pipeline: PipelineFactory, fake_gitlab: FakeGitLabServer, unique: str
) -> None:
    """Files listed from the fake GitLab, planned like a PR's (a lockfile and a binary
    skipped), each message granted by the limiter and served by the simulator, then
    inline threads and one summary note. A redelivery queues nothing, and a second
    finalize run finds the note and posts nothing."""
    pl, action = gitlab_pipeline(pipeline, fake_gitlab, unique, 7)
    ref = action.ref
    pl.start_workers(2)
    pl.enqueue(ref, action.source)
    view = pl.wait_done(ref.id, 40)
    assert view.meta.files == 4 and view.meta.total >= 1 and view.meta.error is None
    assert all(s.status == "done" for s in view.current().values())
    total = view.meta.total  # budgeted like a PR's: one grant and one call per message
    assert len(pl.grants()) == total and pl.stats()["requests"] == total
    assert pl.limiter().status().windows[0].used == total * 1000
    check_posted(fake_gitlab, ref)

    assert not enqueue_pr(pl.admission, ref, action.source)  # a redelivery: reviewed head
    again = pl.admission.queue.enqueue_call(
        FINALIZE_JOB, args=(pl.spec.prefix, ref.id, view.meta.gen), job_id=f"again-{unique}"
    )
    pl.wait(lambda: again.get_status(refresh=True) == "finished", 20, "the second finalize")
    assert again.return_value() == "review was already there"
    check_posted(fake_gitlab, ref)
    assert fake_gitlab.control.requests_to(NOTES) == 1
    assert fake_gitlab.control.requests_to(THREADS) == 2
    assert fake_gitlab.control.requests_to(DIFFS) == 2  # planning, and the sink's positions


def _runs(pl: Pipeline, first: str) -> list[Job]:
    runs, n = [fetch_job(first, pl.redis)], 1
    while Job.exists(f"{first}-r{n}", connection=pl.redis):
        runs.append(fetch_job(f"{first}-r{n}", pl.redis))
        n += 1
    return runs


def _held_s(job: Job) -> float:
    assert job.started_at is not None and job.ended_at is not None, job.id
    return (job.ended_at - job.started_at).total_seconds()


def test_gitlab_faults_still_post_exactly_one_note_and_hold_no_worker(
    pipeline: PipelineFactory, fake_gitlab: FakeGitLabServer, unique: str
) -> None:
    """Planning meets a 429 with only `RateLimit-Reset` (2 s away); once the plan has
    landed, posting meets a 429 with `Retry-After: 1`, a burst of three 502s, a 502
    after an inline thread was stored and one after the summary note was stored. The
    note is posted once, the threads once each; every job run ends at once (waiting is
    the waker's), never sleeping the wait."""
    pl, action = gitlab_pipeline(pipeline, fake_gitlab, unique, 8)
    ref = action.ref
    fake_gitlab.control.faults(rate_limit=1, retry_after_s=None, reset_in_s=2)
    pl.start_workers(2)
    pl.enqueue(ref, action.source)
    pl.wait(lambda: pl.view(ref.id).meta.status == "active", 30, "the plan to land")
    fake_gitlab.control.faults(
        rate_limit=1, retry_after_s=1, server_error=3, after_create=1, note_after_create=1
    )
    view = pl.wait_done(ref.id, 60)
    assert view.meta.error is None
    summary = check_posted(fake_gitlab, ref)
    assert summary["body"].count(review_marker(ref.id, ref.head_sha)) == 1
    stats = fake_gitlab.control.stats()["by_status"]
    assert stats.get("429") == 2 and stats.get("502", 0) == 5
    assert fake_gitlab.control.requests_to(NOTES, 502) == 1  # stored, then 502: found again
    assert fake_gitlab.control.requests_to(NOTES) == 1
    plans = _runs(pl, plan_job_id(pl.spec.prefix, ref))
    finals = _runs(pl, job_id_for(pl.spec.prefix, ref.id, view.meta.gen, "fin"))
    assert str(plans[0].return_value()).startswith("retry 1 in")
    results = [cast(str, j.return_value()) for j in finals]
    assert any("429" in r or "Retry later" in r for r in results), results
    assert results[-1] in ("review posted", "review was already there"), results
    assert len(finals) >= 3
    # No run held its worker through a wait: each ended well inside the 1-2 s GitLab asked.
    assert max(_held_s(j) for j in plans + finals) < 0.9, [_held_s(j) for j in plans + finals]
    took_s = (cast(int, view.meta.finished_ms) - view.meta.arrived_ms) / 1000
    print(f"\ngitlab faults: one note after 2 rate limits and 5 502s, {took_s:.1f} s")
