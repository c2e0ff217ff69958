"""The intake holes a security review found, each closed and tested through its public
path: signed webhooks to the served app, `reviewq enqueue`, and the plan job against
the fake GitHub. A real Redis throughout.

- A PR id is text from outside: `acme/api#1:m` must not name another PR's keys, a local
  diff may not take a GitHub PR's id, and a state the handlers did not expect is a
  clear 4xx, never a 500.
- A captured delivery cannot be replayed: the delivery id is required, a signed body
  is remembered by its digest, a head already reviewed is not paid for again, and the
  plan job asks the forge whether the PR is still open at that head.
- Who may spend the budget: the repository allowlist, the author and fork filters, a
  per-repository rate, and bounds on one PR's messages and on a local diff's size.
- Ids and heads are checked: a head is hex, an owner holds no `/`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis as redis_py
from operator_fixtures import DIFF, deployment, invoke, write_config
from webhook_support import OMIT, Hook, gh_pr, gl_mr, serve_hook

from scheduler.admission import Admission
from scheduler.config import Settings
from scheduler.config.planning import PlanningConfig
from scheduler.config.webhook import WebhookSettings
from scheduler.intake import enqueue_pr
from scheduler.quota.plans import Account, get_preset
from scheduler.sandbox.github import FakeGitHubServer, serve_fake_github
from scheduler.state.jobs import review_queue
from scheduler.state.keys import key_part
from scheduler.state.refs import PullRequestRef
from workers.jobs import plan_pr
from workers.plan_source import HEAD_CHECKS
from workers.review.changes import ChangedFile
from workers.review.planning import plan_review
from workers.runtime import RuntimeSpec, configure

TOKEN_ENV = "RQ_SEC_GH_TOKEN"


def sha(label: str) -> str:
    return hashlib.sha1(label.encode()).hexdigest()


@pytest.fixture
def hook(redis_url: str, unique: str) -> Iterator[Hook]:
    with serve_hook(redis_url, f"sec-{unique}") as served:
        yield served


def snapshot(redis: redis_py.Redis, keys: list[str]) -> dict[str, Any]:
    """The keys that exist with their values, to prove a command left them alone."""
    out: dict[str, Any] = {}
    for key in keys:
        if not redis.exists(key):
            continue
        kind = redis.type(key)
        out[key] = {
            b"hash": redis.hgetall,
            b"list": lambda k: redis.lrange(k, 0, -1),
            b"zset": lambda k: redis.zrange(k, 0, -1, withscores=True),
            b"string": redis.get,
        }[cast(bytes, kind)](key)
    return out


# -- 2. a local id cannot write into another PR's keys ---------------------------------


def test_a_local_id_cannot_name_another_prs_keys(
    hook: Hook, tmp_path: Path, redis_url: str
) -> None:
    """`--pr 'octo/app#7:m'` once wrote its meta into `octo/app#7`'s message hash, and
    the next signed webhook for that PR got a 500."""
    queue = hook.queue.name
    assert hook.github(gh_pr(sha=sha("one"))).json()["status"] == "enqueued"
    keys = hook.admission.keys.pr_keys("octo/app#7")
    before = snapshot(hook.service.redis, keys)
    assert before  # the GitHub PR's keys exist
    config = write_config(tmp_path, redis_url, queue)
    diff = tmp_path / "x.diff"
    diff.write_text(DIFF)
    for hostile in ("octo/app#7:m", "octo/app#7:body", "x{tag}:y", "a%3Ab"):
        result = invoke(config, "enqueue", "--diff", str(diff), "--pr", hostile)
        assert result.exit_code == 0, result.output
    assert snapshot(hook.service.redis, keys) == before
    assert key_part("a%3Ab") != key_part("a:b")  # one-to-one: `%` is encoded too
    moved = hook.github(gh_pr("synchronize", sha=sha("two")))
    assert moved.status_code == 202 and moved.json()["status"] == "enqueued"


def test_a_diff_may_not_take_a_forge_prs_id(tmp_path: Path, redis_url: str, unique: str) -> None:
    config = write_config(tmp_path, redis_url, f"sec-{unique}")
    diff = tmp_path / "x.diff"
    diff.write_text(DIFF)
    for forge_id in ("octo/app#11", "https://github.com/octo/app/pull/11", "g/p/-/x"):
        result = invoke(config, "enqueue", "--diff", str(diff), "--pr", forge_id)
        if forge_id == "g/p/-/x":
            assert result.exit_code == 0  # a plain local id
            continue
        assert result.exit_code == 2 and "names a github PR" in result.output, result.output
    bad_sha = invoke(config, "enqueue", "--diff", str(diff), "--pr", "mine", "--sha", "xyz\n")
    assert bad_sha.exit_code == 2 and "not a commit id" in bad_sha.output


def test_an_id_held_by_another_forge_is_409_not_500(hook: Hook) -> None:
    """`simulate` and the library may register local PRs under forge-like ids; a webhook
    for the GitHub PR of that id must not take that state over, nor crash."""
    ref = PullRequestRef(id="octo/app#7", head_sha=sha("local"), forge="local")
    assert enqueue_pr(hook.admission, ref, {"kind": "diff", "text": DIFF})
    response = hook.github(gh_pr(sha=sha("gh")))
    assert response.status_code == 409 and response.json()["status"] == "conflict"
    assert "held by a local PR" in response.json()["detail"]
    meta = hook.meta("octo/app#7")
    assert meta is not None and meta.ref["forge"] == "local"


def test_an_unexpected_state_is_a_clear_4xx(hook: Hook, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> bool:
        raise RuntimeError("a state nobody planned for")

    monkeypatch.setattr("scheduler.webhook.app.enqueue_pr", broken)
    response = hook.github(gh_pr(sha=sha("x")))
    assert response.status_code == 422 and response.json()["status"] == "unprocessable"
    assert "RuntimeError" in response.json()["detail"]
    assert "nobody planned" not in response.text  # the log has it, the sender does not


# -- 3. replays ---------------------------------------------------------------------------


def test_the_delivery_id_is_required(hook: Hook) -> None:
    github = hook.github(gh_pr(), delivery=OMIT)
    assert github.status_code == 400 and "X-GitHub-Delivery" in github.json()["detail"]
    gitlab = hook.gitlab(gl_mr(), delivery=OMIT)
    assert gitlab.status_code == 400 and "X-Gitlab-Event-UUID" in gitlab.json()["detail"]
    assert hook.jobs() == 0


def test_a_replayed_body_under_new_ids_is_a_duplicate(hook: Hook) -> None:
    """The delivery id header is not signed; the body is. Replaying a captured
    "closed" then "opened", ten times each with fresh ids, queues nothing more."""
    opened, closed = gh_pr(sha=sha("h")), gh_pr("closed", sha=sha("h"))
    assert hook.github(opened).json()["status"] == "enqueued"
    assert hook.github(closed).json()["status"] == "cancelled"
    statuses = [hook.github(body).json()["status"] for _ in range(10) for body in (opened, closed)]
    assert set(statuses) == {"duplicate"}
    assert hook.jobs() == 1
    meta = hook.meta("octo/app#7")
    assert meta is not None and meta.status == "cancelled"


def test_a_reviewed_head_is_not_reviewed_again_unless_a_person_asks(hook: Hook) -> None:
    """Past the dedupe window a replay is a new body to us; the PR's own memory of the
    heads it reviewed keeps it from paying twice."""
    head = sha("reviewed")
    assert hook.github(gh_pr(sha=head)).json()["status"] == "enqueued"
    adm = hook.admission
    gen = adm.submit("octo/app#7", head, [], files=0, plan={})  # nothing to review: finishing
    assert adm.mark_finished("octo/app#7", gen)
    for key in hook.service.redis.scan_iter(match=f"{adm.keys.prefix}:webhook:*"):
        hook.service.redis.delete(key)  # the dedupe window has passed
    jobs = hook.jobs()  # the plan job, and the finalize job of the empty plan
    for action in ("opened", "reopened", "synchronize"):
        again = hook.github(gh_pr(action, sha=head))
        assert again.json()["status"] == "already_queued", action
    assert hook.jobs() == jobs
    ref = PullRequestRef(
        id="octo/app#7", head_sha=head, forge="github", owner="octo", repo="app", number=7
    )
    assert not enqueue_pr(adm, ref, {"kind": "github"})
    assert enqueue_pr(adm, ref, {"kind": "github"}, again=True)  # `reviewq enqueue --again`


def test_enqueue_again_reviews_a_finished_local_diff(
    tmp_path: Path, redis_url: str, unique: str
) -> None:
    config = write_config(tmp_path, redis_url, f"sec-{unique}")
    diff = tmp_path / "x.diff"
    diff.write_text(DIFF)
    assert invoke(config, "enqueue", "--diff", str(diff), "--pr", "mine").exit_code == 0
    _, dep = deployment(config)
    head = hashlib.sha1(DIFF.encode()).hexdigest()
    gen = dep.admission.submit("mine", head, [], files=0, plan={})
    assert dep.admission.mark_finished("mine", gen)
    dep.close()
    second = invoke(config, "enqueue", "--diff", str(diff), "--pr", "mine")
    assert second.exit_code == 0 and "already done (--again" in second.output
    third = invoke(config, "enqueue", "--diff", str(diff), "--pr", "mine", "--again")
    assert third.exit_code == 0 and third.output.startswith("queued mine")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGitHubServer]:
    with serve_fake_github() as server:
        yield server


def _spec(redis_url: str, unique: str, fake: FakeGitHubServer) -> RuntimeSpec:
    account = Account(
        name=f"{unique}-a",
        provider="synthetic",
        base_url="http://127.0.0.1:1/v1",
        api_key_env="UNUSED",
        plan=get_preset("synthetic"),
    )
    settings = Settings(redis_url=redis_url, queue_name=f"sec-{unique}", accounts=[account])
    return RuntimeSpec(
        settings=settings,
        redis_url=redis_url,
        prefix=f"reviewq:sec-{unique}",
        queue_name=f"sec-{unique}",
        model="m",
        github_url=fake.url,
        github_token_env=TOKEN_ENV,
        env={TOKEN_ENV: fake.token},
    )


@pytest.mark.parametrize(
    ("state", "draft", "head", "reason"),
    [
        ("closed", False, "same", "the pull request is closed on GitHub"),
        ("open", True, "same", "the pull request is a draft on GitHub"),
        ("open", False, "moved", "GitHub's head is "),
    ],
)
def test_the_plan_job_asks_github_before_anything_is_spent(
    redis: redis_py.Redis,
    redis_url: str,
    unique: str,
    fake: FakeGitHubServer,
    state: str,
    draft: bool,
    head: str,
    reason: str,
) -> None:
    """A replay older than the dedupe window (or a PR that closed while its plan job
    waited) is found out before the files are listed and before any provider call."""
    owner, number, ours = f"o{unique}", 3, sha("ours")
    at_github = ours if head == "same" else sha("theirs")
    files = [ChangedFile(filename="a.py", patch="@@ -1 +1 @@\n-a\n+b")]
    fake.control.add_pr(owner, "app", number, at_github, files=files, state=state, draft=draft)
    spec = _spec(redis_url, unique, fake)
    configure(spec)
    adm = Admission(redis, review_queue(spec.queue_name, redis), prefix=spec.prefix)
    ref = PullRequestRef(
        id=f"{owner}/app#{number}",
        head_sha=ours,
        forge="github",
        owner=owner,
        repo="app",
        number=number,
    )
    assert enqueue_pr(adm, ref, {"kind": "github"})
    files_route = f"GET /repos/{owner}/app/pulls/{number}/files"
    listed = fake.control.requests_to(files_route)
    for attempt in range(HEAD_CHECKS + 1):
        said = plan_pr(spec.prefix, ref.model_dump_json(), {"kind": "github"}, attempt)
        if head == "same" or attempt == HEAD_CHECKS:
            break
        assert said.startswith("retry"), said  # GitHub may lag behind a push: look again
    assert said.startswith("not reviewed: ") and reason in said
    meta = adm.read_meta(ref.id)
    assert meta is not None and meta.status == "cancelled" and reason in (meta.error or "")
    assert meta.total == 0  # nothing planned, so nothing can spend budget
    assert fake.control.requests_to(files_route) == listed


# -- 4. who may spend the budget ----------------------------------------------------------


@pytest.fixture
def gated(redis_url: str, unique: str) -> Iterator[Hook]:
    webhook = WebhookSettings(
        repositories=("octo/*", "group/sub/project"),
        authors=("OWNER", "MEMBER", "COLLABORATOR"),
        forks=False,
        repo_rate=3,
    )
    settings = Settings(redis_url=redis_url, queue_name=f"sec-{unique}", webhook=webhook)
    with serve_hook(redis_url, settings.queue_name, settings=settings) as served:
        yield served


def member_pr(action: str = "opened", **kwargs: Any) -> dict[str, Any]:
    body = gh_pr(action, **kwargs)
    body["pull_request"]["author_association"] = "MEMBER"
    repo = {"id": 10, "full_name": body["repository"]["full_name"], "fork": False}
    body["pull_request"]["head"]["repo"] = repo
    body["pull_request"]["base"]["repo"] = repo
    return body


def test_only_listed_repositories_may_spend(gated: Hook) -> None:
    outside = member_pr(owner="stranger", repo="public", sha=sha("s"))
    refused = gated.github(outside)
    assert refused.status_code == 202 and refused.json()["status"] == "refused"
    assert "'stranger/public' is not in [webhook] repositories" in refused.json()["detail"]
    assert gated.github(member_pr(owner="OCTO", repo="Other", sha=sha("o"))).status_code == 202
    assert gated.gitlab(gl_mr(sha=sha("gl"))).json()["status"] == "enqueued"
    assert gated.github(gh_pr(sha=sha("c"))).json()["status"] == "refused"  # no association
    assert gated.jobs() == 2
    assert gated.meta("stranger/public#7") is None


def test_authors_and_forks_are_filtered(gated: Hook) -> None:
    stranger = member_pr(sha=sha("a"))
    stranger["pull_request"]["author_association"] = "FIRST_TIME_CONTRIBUTOR"
    refused = gated.github(stranger).json()
    assert refused["status"] == "refused" and "FIRST_TIME_CONTRIBUTOR" in refused["detail"]
    fork = member_pr(sha=sha("f"))
    fork["pull_request"]["head"]["repo"] = {"id": 99, "full_name": "mallory/app", "fork": True}
    assert "fork" in gated.github(fork).json()["detail"]
    gone = member_pr(sha=sha("g"))
    gone["pull_request"]["head"]["repo"] = None  # the fork was deleted
    assert gated.github(gone).json()["status"] == "refused"
    mr = gl_mr(sha=sha("mr"))
    mr["object_attributes"].update(source_project_id=7, target_project_id=42)
    assert gated.gitlab(mr).json()["status"] == "refused"
    assert gated.jobs() == 0


def test_a_repository_queues_at_most_its_hourly_rate(gated: Hook) -> None:
    statuses = [gated.github(member_pr(number=n, sha=sha(f"r{n}"))).status_code for n in (1, 2, 3)]
    assert statuses == [202, 202, 202]
    again = gated.github(member_pr("synchronize", number=1, sha=sha("r1")))  # already queued
    assert again.json()["status"] == "already_queued"  # ... gives its place back
    over = gated.github(member_pr(number=4, sha=sha("r4")))
    assert over.status_code == 429 and over.json()["status"] == "rate_limited"
    assert 0 < int(over.headers["Retry-After"]) <= 3600
    assert "repo_rate" in over.json()["detail"]
    assert gated.jobs() == 3 and gated.meta("octo/app#4") is None
    other = gated.github(member_pr(repo="other", number=4, sha=sha("r5")))
    assert other.status_code == 202  # the rate is per repository
    redelivered = gated.github(member_pr(number=4, sha=sha("r4")))
    assert redelivered.status_code == 429  # refused deliveries stay deliverable


def test_one_pr_plans_at_most_max_messages(tmp_path: Path, redis_url: str, unique: str) -> None:
    """A huge diff once planned 3,370 messages. Now the riskiest files that fit are
    reviewed in full, the rest summarised, and the review says so."""
    body = "".join(f"+line {n} of a generated table, long enough to count\n" for n in range(4000))
    files = [
        ChangedFile(filename=f"src/mod{i}.py", status="added", patch=f"@@ -0,0 +1,4000 @@\n{body}")
        for i in range(6)
    ]
    full = plan_review(files, PlanningConfig(max_messages=None))
    capped = plan_review(files, PlanningConfig(max_messages=20))
    assert len(full.messages) > 20 >= len(capped.messages)
    assert capped.degraded and capped.summarised and "max_messages" in (capped.note or "")
    assert PlanningConfig().max_messages == 100 and PlanningConfig().large_pr_files == 150
    config = write_config(tmp_path, redis_url, f"sec-{unique}", extra="[planning]\n")
    config.write_text(config.read_text() + "max_diff_bytes = 2048\n")
    big = tmp_path / "big.diff"
    big.write_text(DIFF + "#" * 4096)
    result = invoke(config, "enqueue", "--diff", str(big), "--pr", "big")
    assert result.exit_code == 2 and "max_diff_bytes" in result.output


# -- 8. ids and heads ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"sha": "a" * 39 + "\n"}, "pull_request.head.sha"),
        ({"sha": "not-hex-at-all"}, "pull_request.head.sha"),
        ({"owner": "a/b", "repo": "c"}, "repository.owner.login"),
        ({"owner": "a", "repo": "b/c"}, "repository.name"),
        ({"owner": "a", "repo": "b:m"}, "repository.name"),
    ],
)
def test_heads_and_names_are_checked(hook: Hook, change: dict[str, str], named: str) -> None:
    response = hook.github(gh_pr(**change))
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith(named)
    assert hook.jobs() == 0


def test_a_gitlab_path_must_be_a_project_path(hook: Hook) -> None:
    for path in ("group//project", "project-without-group", "g/p\n"):
        response = hook.gitlab(gl_mr(path=path))
        assert response.status_code == 400, (path, response.text)
        assert "project.path_with_namespace" in response.json()["detail"]
    ok = hook.gitlab(gl_mr(path="Group.a/sub_b/pro-ject", sha=sha("ok")))
    assert ok.json()["status"] == "enqueued"
    assert json.loads(ok.text)["pr"] == "Group.a/sub_b/pro-ject!5"


def test_upper_case_heads_are_one_head(hook: Hook) -> None:
    upper = sha("u").upper()
    assert hook.github(gh_pr(sha=upper)).json()["status"] == "enqueued"
    assert hook.github(gh_pr("synchronize", sha=upper.lower())).json()["status"] == (
        "already_queued"
    )
