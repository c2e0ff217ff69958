"""`reviewq enqueue`, `results`, `cancel` and `retry-failed` against a real Redis, the
fake GitHub, and (for RQ's failed registry) a real RQ worker run in this process."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis as redis_py
from operator_fixtures import (
    DIFF,
    deployment,
    enqueue_local,
    finish,
    invoke,
    submit,
    take,
    write_config,
)
from rq.job import Job

from scheduler.admission import job_id_for
from scheduler.intake import PLAN_JOB
from scheduler.ops.deployment import PrSyntaxError, parse_pr
from scheduler.sandbox.github import FakeGitHubServer, serve_fake_github
from scheduler.state.jobs import fetch_job, review_queue, review_worker
from scheduler.state.records import read_pr
from scheduler.state.refs import PullRequestRef
from workers.forge.sinks import LogSink
from workers.review.changes import ChangedFile
from workers.review.model import Review, ReviewComment

TOKEN_ENV = "RQ_TEST_GH_TOKEN"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGitHubServer]:
    with serve_fake_github() as server:
        yield server


def plan_jobs(redis: redis_py.Redis, queue: str) -> list[Job]:
    ids = [i.decode() for i in cast(list[bytes], redis.lrange(f"rq:queue:{queue}", 0, -1))]
    jobs = [fetch_job(i, redis) for i in ids]
    return [j for j in jobs if j.func_name == PLAN_JOB]


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("octo/app#12", ("octo/app#12", "github")),
        ("https://github.com/octo/app/pull/12", ("octo/app#12", "github")),
        ("https://github.com/octo/app/pull/12/files?w=1", ("octo/app#12", "github")),
        ("https://gitlab.com/grp/sub/app/-/merge_requests/4", ("grp/sub/app!4", "gitlab")),
        ("local-diff-1", ("local-diff-1", "local")),
    ],
)
def test_pr_names_people_paste(text: str, expect: tuple[str, str]) -> None:
    parsed = parse_pr(text)
    assert (parsed.id, parsed.forge) == expect


@pytest.mark.parametrize("text", ["has space", "a|b", "https://example.com/x", "", "o/r#0"])
def test_what_is_not_a_pr(text: str) -> None:
    with pytest.raises(PrSyntaxError):
        parse_pr(text)


def test_enqueue_a_github_pr_looks_its_head_up(
    tmp_path: Path, redis_url: str, unique: str, fake: FakeGitHubServer
) -> None:
    extra = f'[review]\ngithub_url = "{fake.url}"\ngithub_token_env = "{TOKEN_ENV}"\n'
    config = write_config(tmp_path, redis_url, f"q-{unique}", extra=extra)
    env = {TOKEN_ENV: fake.token}
    files = [ChangedFile(filename="a.py", patch="@@ -1 +1 @@\n-a\n+b")]
    fake.control.add_pr(unique, "app", 3, "ead3" * 10, files=files)
    first = invoke(config, "enqueue", f"{unique}/app#3", "--json", env=env)
    assert first.exit_code == 0, first.output
    assert json.loads(first.output) == {
        "pr": f"{unique}/app#3", "head_sha": "ead3" * 10, "source": "github", "queued": True,
        "status": "planning", "queue": f"q-{unique}",
    }  # fmt: skip
    _, dep = deployment(config)
    (job,) = plan_jobs(dep.redis, f"q-{unique}")
    prefix, ref_json, source = job.args
    ref = PullRequestRef.model_validate_json(ref_json)
    assert (prefix, source) == (dep.prefix, {"kind": "github"})
    assert (ref.owner, ref.repo, ref.number, ref.forge) == (unique, "app", 3, "github")
    again = invoke(config, "enqueue", f"https://github.com/{unique}/app/pull/3", env=env)
    assert again.exit_code == 0 and "not queued again" in again.output
    fake.control.add_pr(unique, "app", 3, "ead4" * 10, files=files)
    moved = invoke(config, "enqueue", f"{unique}/app#3", env=env)
    assert moved.exit_code == 0 and f"queued {unique}/app#3 at ead4ead4ead" in moved.output
    assert len(plan_jobs(dep.redis, f"q-{unique}")) == 2
    dep.close()


def test_enqueue_github_errors(
    tmp_path: Path, redis_url: str, unique: str, fake: FakeGitHubServer
) -> None:
    extra = f'[review]\ngithub_url = "{fake.url}"\ngithub_token_env = "{TOKEN_ENV}"\n'
    config = write_config(tmp_path, redis_url, f"q-{unique}", extra=extra)
    fake.control.add_pr(unique, "app", 5, "h5", state="closed")
    env = {TOKEN_ENV: fake.token}
    cases = [
        ([f"{unique}/app#5"], env, 1, "is closed"),
        ([f"{unique}/app#99"], env, 1, "no such PR"),
        ([f"{unique}/app#5"], {}, 2, f"{TOKEN_ENV} is not set"),
        ([f"{unique}/app#5"], {TOKEN_ENV: "wrong"}, 2, "was refused by GitHub"),
        (["app#3"], env, 2, "is not a PR"),
        (["https://gitlab.com/g/p/-/merge_requests/1"], env, 2, "GITLAB_TOKEN is not set"),
        ([], env, 2, "give a PR"),
        ([f"{unique}/app#5", "--sha", "x"], env, 2, "go with --diff"),
    ]
    for args, case_env, code, message in cases:
        result = invoke(config, "enqueue", *args, env=case_env)
        assert result.exit_code == code, (args, result.output)
        assert message in result.output, (args, result.output)
    _, dep = deployment(config)
    assert plan_jobs(dep.redis, f"q-{unique}") == []
    dep.close()


def test_enqueue_a_local_diff(tmp_path: Path, redis_url: str, unique: str) -> None:
    config = write_config(tmp_path, redis_url, f"q-{unique}")
    diff = tmp_path / "pr.diff"
    diff.write_text(DIFF)
    pr = f"{unique}-local"
    first = invoke(config, "enqueue", "--diff", str(diff), "--pr", pr, "--json")
    assert first.exit_code == 0, first.output
    data = json.loads(first.output)
    assert data["queued"] and data["head_sha"] == hashlib.sha1(DIFF.encode()).hexdigest()
    _, dep = deployment(config)
    (job,) = plan_jobs(dep.redis, f"q-{unique}")
    assert job.args[2] == {"kind": "diff", "text": DIFF}
    again = invoke(config, "enqueue", "--diff", str(diff), "--pr", pr)
    assert again.exit_code == 0 and "not queued again" in again.output
    other = invoke(config, "enqueue", "--diff", str(diff), "--pr", pr, "--sha", "feedbeef")
    assert other.exit_code == 0 and "at feedbeef" in other.output
    missing = invoke(config, "enqueue", "--diff", str(diff))
    assert missing.exit_code == 2 and "--diff needs --pr" in missing.output
    both = invoke(config, "enqueue", "o/r#1", "--diff", str(diff), "--pr", pr)
    assert both.exit_code == 2
    dep.close()


def test_results_shows_the_stored_review_and_the_state(
    tmp_path: Path, redis_url: str, unique: str
) -> None:
    config = write_config(tmp_path, redis_url, f"q-{unique}")
    _, dep = deployment(config)
    adm = dep.admission
    ref = enqueue_local(adm, f"{unique}/app#1")
    gen = submit(adm, ref, 1)
    finish(adm, *take(adm), ok=True)
    sink = LogSink(dep.redis, prefix=dep.prefix)
    old = Review(pr=ref.id, head_sha="0ld" * 4, summary="An older look.")
    comment = ReviewComment(path="src/app.py", line=2, body="Is sys used?")
    new = Review(
        pr=ref.id, head_sha=ref.head_sha, summary="Looks fine.", comments=(comment,),
        messages_done=1,
    )  # fmt: skip
    sink.post(old, ref)
    sink.post(new, ref)
    assert adm.mark_finished(ref.id, gen)
    shown = invoke(config, "results", ref.id)
    assert shown.exit_code == 0, shown.output
    assert f"{ref.id} at {ref.head_sha[:12]}: done (1 done of 1)" in shown.output
    assert "Looks fine." in shown.output and "src/app.py:2\nIs sys used?" in shown.output
    assert "also stored: 0ld0ld0ld0ld" in shown.output
    data = json.loads(invoke(config, "results", ref.id, "--json").output)
    assert data["latest_sha"] == ref.head_sha and sorted(data["shas"]) == data["shas"]
    assert data["review"]["summary"] == "Looks fine." and data["state"]["status"] == "done"
    older = invoke(config, "results", ref.id, "--sha", "0ld" * 4)
    assert older.exit_code == 0 and "An older look." in older.output
    dep.close()


def test_results_without_a_review_exits_1(tmp_path: Path, redis_url: str, unique: str) -> None:
    config = write_config(tmp_path, redis_url, f"q-{unique}")
    _, dep = deployment(config)
    ref = enqueue_local(dep.admission, f"{unique}/app#2")
    pending = invoke(config, "results", ref.id)
    assert pending.exit_code == 1
    assert f"no review stored for {ref.id} yet" in pending.output and "planning" in pending.output
    unknown = invoke(config, "results", f"{unique}/none#1")
    assert unknown.exit_code == 1 and "unknown PR" in unknown.output
    assert invoke(config, "results", "not a pr").exit_code == 2
    dep.close()


def test_cancel_stops_unstarted_work_and_lets_running_work_finish(
    tmp_path: Path, redis_url: str, unique: str
) -> None:
    config = write_config(tmp_path, redis_url, f"q-{unique}")
    _, dep = deployment(config)
    adm = dep.admission
    ref = enqueue_local(adm, f"{unique}/app#3")
    submit(adm, ref, 4)  # two queued (the PR's cap), two pending
    take(adm)  # one of them running
    result = invoke(config, "cancel", ref.id)
    assert result.exit_code == 0, result.output
    assert "cancelled 3 message(s)" in result.output and "1 running" in result.output
    view = read_pr(dep.redis, dep.keys, ref.id)
    assert view is not None and view.counts() == {"running": 1, "cancelled": 3}
    again = json.loads(invoke(config, "cancel", ref.id, "--json").output)
    assert again == {"pr": ref.id, "cancelled": 0, "running": 1, "status": "active"}
    unknown = invoke(config, "cancel", f"{unique}/none#1")
    assert unknown.exit_code == 1 and "unknown PR" in unknown.output
    dep.close()


def test_a_pr_cancelled_while_planning_is_not_planned(
    tmp_path: Path, redis_url: str, unique: str
) -> None:
    config = write_config(tmp_path, redis_url, f"q-{unique}")
    _, dep = deployment(config)
    ref = enqueue_local(dep.admission, f"{unique}/app#4")
    result = invoke(config, "cancel", ref.id)
    assert result.exit_code == 0 and "status now cancelled" in result.output
    submit(dep.admission, ref, 3)  # its plan job runs after the cancel
    view = read_pr(dep.redis, dep.keys, ref.id)
    assert view is not None and view.meta.status == "cancelled" and view.messages == {}
    assert dep.redis.llen(f"rq:queue:q-{unique}") == 1  # the plan job only
    # enqueuing it again is a fresh start
    assert enqueue_local(dep.admission, ref.id).head_sha == ref.head_sha
    submit(dep.admission, ref, 1)
    view = read_pr(dep.redis, dep.keys, ref.id)
    assert view is not None and view.meta.status == "active"
    dep.close()


def test_retry_failed_rearms_failed_messages_of_open_reviews(
    tmp_path: Path, redis_url: str, unique: str
) -> None:
    config = write_config(tmp_path, redis_url, f"q-{unique}")
    _, dep = deployment(config)
    adm = dep.admission
    open_ref = enqueue_local(adm, f"{unique}/open#1")
    submit(adm, open_ref, 3)
    member, dispatch = take(adm, open_ref.id)
    finish(adm, member, dispatch, ok=False)  # 1.0 failed, 1.1 and 1.2 queued
    done_ref = enqueue_local(adm, f"{unique}/done#2")
    gen = submit(adm, done_ref, 1)
    finish(adm, *take(adm, done_ref.id), ok=False)
    assert adm.mark_finished(done_ref.id, gen)
    result = invoke(config, "retry-failed", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["rearmed_messages"] == 1 and data["requeued_jobs"] == 0
    by_pr = {m["pr"]: m for m in data["messages"]}
    assert by_pr[open_ref.id]["rearmed"] == 1
    assert (
        by_pr[done_ref.id]["rearmed"] == 0 and "one review per head" in by_pr[done_ref.id]["note"]
    )
    view = read_pr(dep.redis, dep.keys, open_ref.id)
    assert view is not None
    state = view.messages["1.0"]
    # pending behind the PR's cap, with a fresh request id (.r1) and no reason left
    assert (state.status, state.retries, state.runs, state.reason) == ("pending", 1, 0, None)
    finish(adm, *take(adm, open_ref.id), ok=True)  # a slot frees: 1.0 is queued first
    view = read_pr(dep.redis, dep.keys, open_ref.id)
    assert view is not None and view.messages["1.0"].status == "queued"
    assert job_id_for(adm.keys.prefix, member, dispatch + 1) in adm.queue.get_job_ids()
    again = json.loads(invoke(config, "retry-failed", "--pr", open_ref.id, "--json").output)
    assert again["rearmed_messages"] == 0 and again["messages"] == []
    dep.close()


def _run_worker_once(dep_queue_name: str, redis: redis_py.Redis) -> None:
    """A real RQ worker in this process: no runtime is configured for its prefix,
    so every reviewq job fails, as it would for a misconfigured worker."""
    queue = review_queue(dep_queue_name, redis)
    review_worker([queue], redis).work(burst=True, logging_level="CRITICAL")


def test_retry_failed_requeues_live_rq_jobs_and_leaves_stale_ones(
    tmp_path: Path, redis_url: str, unique: str
) -> None:
    config = write_config(tmp_path, redis_url, f"q-{unique}")
    _, dep = deployment(config)
    adm = dep.admission
    planning = enqueue_local(adm, f"{unique}/plan#1")
    active = enqueue_local(adm, f"{unique}/review#2")
    submit(adm, active, 1)
    adm.queue.remove(plan_jobs(dep.redis, f"q-{unique}")[-1].id)  # review#2 is planned
    _run_worker_once(f"q-{unique}", dep.redis)
    failed_key = adm.queue.failed_job_registry.key
    assert dep.redis.zcard(failed_key) == 2
    shown = json.loads(invoke(config, "inspect", "--json").output)
    assert shown["queues"]["failed"] == 2 and shown["queues"]["queued"] == 0
    first = json.loads(invoke(config, "retry-failed", "--json").output)
    assert first["requeued_jobs"] == 2
    assert {j["kind"] for j in first["jobs"]} == {"plan", "review"}
    assert all("RuntimeError" in j["error"] for j in first["jobs"])
    assert dep.redis.zcard(failed_key) == 0 and adm.queue.count == 2
    _run_worker_once(f"q-{unique}", dep.redis)
    adm.cancel(planning.id)  # its plan job is stale now
    take_member = f"{active.id}|1.0"
    assert adm.claim(take_member, 1, 60_000) is not None  # its job is stale now
    second = invoke(config, "retry-failed", "--pr", active.id)
    assert second.exit_code == 0, second.output
    assert "0 requeued, 1 left" in second.output and "its message was run again" in second.output
    third = json.loads(invoke(config, "retry-failed", "--json").output)
    assert third["requeued_jobs"] == 0 and len(third["jobs"]) == 2
    assert dep.redis.zcard(failed_key) == 2 and adm.queue.count == 0
    unknown = invoke(config, "retry-failed", "--pr", f"{unique}/none#1")
    assert unknown.exit_code == 1 and "unknown PR" in unknown.output
    dep.close()
