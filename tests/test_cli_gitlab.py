"""`reviewq enqueue`, `results`, `cancel` and `inspect` for a GitLab merge request,
named by its URL (nested groups), against a real Redis and the fake GitLab."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_fixtures import deployment, invoke, write_config

from scheduler.ops.deployment import parse_pr
from scheduler.sandbox.gitlab import FakeGitLabServer, MrFile, serve_fake_gitlab
from scheduler.state.refs import PullRequestRef
from workers.forge.sinks import LogSink
from workers.review.model import Review

TOKEN_ENV = "RQ_TEST_GL_TOKEN"
DIFF = "@@ -1,2 +1,3 @@\n a = 1\n+b = 2\n c = 3\n"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGitLabServer]:
    with serve_fake_gitlab() as server:
        yield server


def config_for(tmp_path: Path, redis_url: str, unique: str, fake: FakeGitLabServer) -> Path:
    extra = f'[review]\ngitlab_url = "{fake.url}"\ngitlab_token_env = "{TOKEN_ENV}"\n'
    return write_config(tmp_path, redis_url, f"q-{unique}", extra=extra)


def test_a_merge_request_is_enqueued_inspected_and_cancelled_by_its_url(
    tmp_path: Path, redis_url: str, unique: str, fake: FakeGitLabServer
) -> None:
    config = config_for(tmp_path, redis_url, unique, fake)
    project = f"{unique}/sub/app"
    fake.control.add_mr(
        project, 12, "c0ffee12", files=[MrFile(old_path="a.py", new_path="a.py", diff=DIFF)]
    )
    url = f"{fake.url}/{project}/-/merge_requests/12"
    env = {TOKEN_ENV: fake.token}
    queued = invoke(config, "enqueue", url, "--json", env=env)
    assert queued.exit_code == 0, queued.output
    data = json.loads(queued.output)
    assert data["pr"] == f"{project}!12" and data["head_sha"] == "c0ffee12" and data["queued"]
    again = invoke(config, "enqueue", url, env=env)
    assert again.exit_code == 0 and "not queued again" in again.output

    _, dep = deployment(config)
    meta = dep.admission.read_meta(f"{project}!12")
    assert meta is not None and meta.ref["forge"] == "gitlab" and meta.status == "planning"
    (plan_id,) = dep.queue.get_job_ids()
    job_source = dep.queue.fetch_job(plan_id).args[2]  # type: ignore[union-attr]
    assert job_source == {"kind": "gitlab", "project": project, "iid": 12}

    shown = invoke(config, "inspect", "--pr", url, "--json")
    assert shown.exit_code == 0, shown.output
    assert f"{project}!12" in shown.output
    missing = invoke(config, "results", url)
    assert missing.exit_code == 1 and "no review stored" in missing.output
    LogSink(dep.redis, prefix=dep.prefix).post(
        Review(pr=f"{project}!12", head_sha="c0ffee12", summary="Fine."),
        PullRequestRef(
            id=f"{project}!12",
            head_sha="c0ffee12",
            forge="gitlab",
            owner=f"{unique}/sub",
            repo="app",
            number=12,
        ),
    )
    results = invoke(config, "results", url)
    assert results.exit_code == 0 and "Fine." in results.output
    cancelled = invoke(config, "cancel", url)
    assert cancelled.exit_code == 0 and "status now cancelled" in cancelled.output
    dep.close()


def test_enqueue_says_why_a_merge_request_cannot_be_queued(
    tmp_path: Path, redis_url: str, unique: str, fake: FakeGitLabServer
) -> None:
    config = config_for(tmp_path, redis_url, unique, fake)
    project = f"{unique}/app"
    fake.control.add_mr(project, 1, "aaaa1111", state="closed")
    fake.control.add_mr(project, 2, "bbbb2222", draft=True)
    env = {TOKEN_ENV: fake.token}
    cases = [
        (f"{fake.url}/{project}/-/merge_requests/1", env, 1, "is closed"),
        (f"{fake.url}/{project}/-/merge_requests/2", env, 1, "is a draft"),
        (f"{fake.url}/{project}/-/merge_requests/9", env, 1, "no such merge request"),
        (f"{fake.url}/{project}/-/merge_requests/1", {}, 2, f"{TOKEN_ENV} is not set"),
        (f"{fake.url}/{project}/-/merge_requests/1", {TOKEN_ENV: "wrong"}, 2, "refused by GitLab"),
        (
            f"https://elsewhere.example/{project}/-/merge_requests/1",
            env,
            2,
            "this deployment's GitLab",
        ),
    ]
    for url, case_env, code, message in cases:
        result = invoke(config, "enqueue", url, env=case_env)
        assert result.exit_code == code, (url, result.output)
        assert message in result.output, (url, result.output)


def test_a_merge_request_url_under_a_relative_root_names_the_project() -> None:
    url = "https://example.com/gitlab/grp/sub/app/-/merge_requests/3"
    assert parse_pr(url, gitlab_url="https://example.com/gitlab/").id == "grp/sub/app!3"
    assert parse_pr(url).id == "gitlab/grp/sub/app!3"  # without the setting: a guess
