"""The plan job of a GitLab merge request, run in this process against the fake GitLab:
the forge check before anything is listed, and files GitLab withheld, listed with why."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis as redis_py

from scheduler.admission import Admission
from scheduler.config import Settings
from scheduler.intake import enqueue_pr
from scheduler.quota.plans import Account, get_preset
from scheduler.sandbox.gitlab import FakeGitLabConfig, FakeGitLabServer, MrFile, serve_fake_gitlab
from scheduler.state.jobs import review_queue
from scheduler.state.refs import PullRequestRef
from workers.forge.gitlab_diffs import TOO_LARGE
from workers.jobs import plan_pr
from workers.runtime import RuntimeSpec, configure

TOKEN_ENV = "RQ_TEST_PLAN_GL_TOKEN"
DIFFS = "GET /projects/:id/merge_requests/:iid/diffs"
SMALL = "@@ -1,2 +1,3 @@\n a = 1\n+b = 2\n c = 3\n"


@pytest.fixture
def fake() -> Iterator[FakeGitLabServer]:
    with serve_fake_gitlab(
        FakeGitLabConfig(collapse_chars=2_000, too_large_chars=20_000)
    ) as server:
        yield server


def setup(redis: redis_py.Redis, redis_url: str, unique: str, fake: FakeGitLabServer) -> Admission:
    account = Account(
        name=f"{unique}-a",
        provider="synthetic",
        base_url="http://127.0.0.1:1/v1",
        api_key_env="UNUSED",
        plan=get_preset("synthetic"),
    )
    queue = f"glp-{unique}"
    spec = RuntimeSpec(
        settings=Settings(redis_url=redis_url, queue_name=queue, accounts=[account]),
        redis_url=redis_url,
        prefix=f"reviewq:{queue}",
        queue_name=queue,
        model="m",
        gitlab_url=fake.url,
        gitlab_token_env=TOKEN_ENV,
        env={TOKEN_ENV: fake.token},
    )
    configure(spec)
    return Admission(redis, review_queue(queue, redis), prefix=spec.prefix)


def queue_mr(
    admission: Admission, project: str, iid: int, sha: str
) -> tuple[PullRequestRef, dict[str, object]]:
    owner, _, repo = project.rpartition("/")
    ref = PullRequestRef(
        id=f"{project}!{iid}", head_sha=sha, forge="gitlab", owner=owner, repo=repo, number=iid
    )
    source: dict[str, object] = {"kind": "gitlab", "project": project, "iid": iid}
    assert enqueue_pr(admission, ref, source)
    return ref, source


@pytest.mark.parametrize(
    ("state", "draft", "reason"),
    [
        ("closed", False, "is closed on GitLab"),
        ("merged", False, "is merged on GitLab"),
        ("opened", True, "a draft on GitLab"),
    ],
)
def test_a_merge_request_not_open_and_ready_gets_nothing_spent(
    redis: redis_py.Redis,
    redis_url: str,
    unique: str,
    fake: FakeGitLabServer,
    state: str,
    draft: bool,
    reason: str,
) -> None:
    admission = setup(redis, redis_url, unique, fake)
    project = f"{unique}/sub/app"
    fake.control.add_mr(
        project,
        4,
        "abc1234",
        state=state,
        draft=draft,
        files=[MrFile(old_path="a.py", new_path="a.py", diff=SMALL)],
    )
    ref, source = queue_mr(admission, project, 4, "abc1234")
    assert reason in plan_pr(admission.keys.prefix, ref.model_dump_json(), source)
    meta = admission.read_meta(ref.id)
    assert meta is not None and meta.status == "cancelled" and reason in (meta.error or "")
    assert meta.total == 0 and fake.control.requests_to(DIFFS) == 0


def test_withheld_files_are_fetched_or_listed_with_their_reason(
    redis: redis_py.Redis, redis_url: str, unique: str, fake: FakeGitLabServer
) -> None:
    admission = setup(redis, redis_url, unique, fake)
    project = f"{unique}/app"
    old = "".join(f"value_{n} = {n}\n" for n in range(400))
    new = old.replace("value_200 = 200\n", "value_200 = 'changed'\n")
    collapsed = "@@ -1,400 +1,400 @@\n" + "".join(" " + line for line in old.splitlines(True))
    files = [
        MrFile(old_path="small.py", new_path="small.py", diff=SMALL),
        MrFile(
            old_path="mid.py", new_path="mid.py", diff=collapsed, old_content=old, new_content=new
        ),
        MrFile(old_path="huge.py", new_path="huge.py", diff="@@ -1 +1 @@\n" + "+x\n" * 20_000),
        MrFile(old_path="api.pb.go", new_path="api.pb.go", diff=SMALL, generated_file=True),
    ]
    fake.control.add_mr(project, 5, "def5678", files=files)
    ref, source = queue_mr(admission, project, 5, "def5678")
    assert plan_pr(admission.keys.prefix, ref.model_dump_json(), source).startswith("gen 1")
    meta = admission.read_meta(ref.id)
    assert meta is not None and meta.files == 4 and meta.status == "active"
    skipped = {s["path"]: s["reason"] for s in meta.plan["skipped"]}
    assert skipped == {
        "huge.py": TOO_LARGE,
        "api.pb.go": "generated (GitLab marks it generated_file)",
    }
    bodies = [b.decode() for b in redis.hvals(admission.keys.body(ref.id))]  # type: ignore[union-attr]
    text = "\n".join(bodies)
    assert "small.py" in text and "value_200 = 'changed'" in text  # the collapsed file, fetched
    raw = "GET /projects/:id/repository/files/:file_path/raw"
    assert fake.control.requests_to(raw, 200) == 2  # its base and head
