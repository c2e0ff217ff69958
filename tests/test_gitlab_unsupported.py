"""A GitLab merge request is accepted and queued, but reviewq has no GitLab client yet:
its plan job says so on the PR, once, instead of failing in RQ on every run."""

from __future__ import annotations

import redis as redis_py

from scheduler.admission import Admission
from scheduler.config import Settings
from scheduler.intake import enqueue_pr
from scheduler.quota.plans import Account, get_preset
from scheduler.state.jobs import review_queue
from scheduler.state.refs import PullRequestRef
from workers.jobs import GITLAB_UNSUPPORTED, plan_pr
from workers.runtime import RuntimeSpec, configure


def test_a_gitlab_merge_request_ends_cancelled_with_the_reason(
    redis: redis_py.Redis, redis_url: str, unique: str
) -> None:
    account = Account(
        name=f"{unique}-a",
        provider="synthetic",
        base_url="http://127.0.0.1:1/v1",
        api_key_env="UNUSED",
        plan=get_preset("synthetic"),
    )
    settings = Settings(redis_url=redis_url, queue_name=f"gl-{unique}", accounts=[account])
    prefix = f"reviewq:gl-{unique}"
    spec = RuntimeSpec(
        settings=settings,
        redis_url=redis_url,
        prefix=prefix,
        queue_name=f"gl-{unique}",
        model="m",
    )
    configure(spec)
    admission = Admission(redis, review_queue(spec.queue_name, redis), prefix=prefix)
    ref = PullRequestRef(
        id="group/project!4",
        head_sha="abc1234",
        forge="gitlab",
        owner="group",
        repo="project",
        number=4,
    )
    source = {"kind": "gitlab", "project_id": 1, "iid": 4}
    assert enqueue_pr(admission, ref, source)
    assert plan_pr(prefix, ref.model_dump_json(), source) == GITLAB_UNSUPPORTED
    meta = admission.read_meta(ref.id)
    assert meta is not None and meta.status == "cancelled"
    assert meta.error == GITLAB_UNSUPPORTED
    assert meta.total == 0  # nothing was planned, so nothing can spend budget
