"""`enqueue_pr`, the webhook's one call into admission, against a real Redis.

It registers a PR inside its own transaction (`Admission.register_in`, the body of
`Admission.register`), to commit the registration and the plan job together; these
tests hold the two paths to the same result.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, cast

import pytest
import redis as redis_py

from scheduler.admission import Admission
from scheduler.intake import enqueue_pr
from scheduler.state.jobs import review_queue
from scheduler.state.records import encode_meta
from scheduler.state.refs import PullRequestRef

PR = "octo/app#7"
Step = Callable[[Admission], object]


def _admission(redis: redis_py.Redis, name: str) -> Admission:
    return Admission(redis, review_queue(name, redis), prefix=f"t:{name}")


def _state(adm: Admission) -> dict[str, Any]:
    """Everything a registration leaves, with arrival told apart only by order."""
    meta = adm.read_meta(PR)
    assert meta is not None
    fields = encode_meta(meta)
    arrived = int(fields.pop("arrived_ms"))
    score = adm.redis.zscore(adm.keys.prs, PR)
    ttls = [cast(int, adm.redis.ttl(key)) for key in (adm.keys.meta(PR), adm.keys.prs)]
    return {"fields": fields, "indexed": score == arrived, "ttl_set": all(t > 0 for t in ttls)}


def _ref(head: str) -> PullRequestRef:
    """A ref at a head named by a label (a commit id is hex: the label's digest)."""
    sha = hashlib.sha1(head.encode()).hexdigest()
    return PullRequestRef(id=PR, head_sha=sha, owner="octo", repo="app", number=7)


def _cancel(adm: Admission) -> object:
    return adm.cancel(PR, "closed")


@pytest.mark.parametrize(
    "before",
    [[], [_cancel], ["sha0"], ["sha0", _cancel], ["sha1", _cancel]],
    ids=["new", "cancelled-unknown", "other-head", "other-head-cancelled", "same-cancelled"],
)
def test_enqueue_pr_registers_as_admission_register_does(
    redis: redis_py.Redis, unique: str, before: list[str | Step]
) -> None:
    ours, theirs = _admission(redis, f"a-{unique}"), _admission(redis, f"b-{unique}")
    for adm, register in ((ours, False), (theirs, True)):
        for step in before:
            if isinstance(step, str):
                assert enqueue_pr(adm, _ref(step), {"kind": "diff", "text": ""})
            else:
                step(adm)
        arrived = adm.read_meta(PR)
        if register:
            adm.register(PR, _ref("sha1").model_dump(mode="json"), _ref("sha1").head_sha)
        else:
            assert enqueue_pr(adm, _ref("sha1"), {"kind": "diff", "text": ""})
        after = adm.read_meta(PR)
        assert (
            after is not None
            and after.status == "planning"
            and after.head_sha == _ref("sha1").head_sha
        )
        if arrived is not None and arrived.status not in {"done", "cancelled"}:
            assert after.arrived_ms == arrived.arrived_ms  # a new head: still waiting
    assert _state(ours) == _state(theirs)


def test_the_extra_write_lands_only_with_the_plan_job(redis: redis_py.Redis, unique: str) -> None:
    adm = _admission(redis, unique)
    marks: list[int] = []

    def mark(pipe: Any) -> None:
        marks.append(1)
        pipe.set(f"t:{unique}:mark", len(marks))

    assert enqueue_pr(adm, _ref("sha1"), {"kind": "diff", "text": ""}, also=mark)
    assert not enqueue_pr(adm, _ref("sha1"), {"kind": "diff", "text": ""}, also=mark)
    assert adm.queue.count == 1 and marks == [1] and redis.get(f"t:{unique}:mark") == b"1"


def test_a_failed_transaction_leaves_nothing(redis: redis_py.Redis, unique: str) -> None:
    """Registration, index, plan job and extra write commit together or not at all:
    a failing plan job (the last write built) takes the registration with it."""
    adm = _admission(redis, unique)

    def broken(pipe: Any) -> None:
        raise redis_py.ConnectionError("gone")

    with pytest.raises(redis_py.ConnectionError):
        enqueue_pr(adm, _ref("sha1"), {"kind": "diff", "text": ""}, also=broken)
    assert adm.read_meta(PR) is None and adm.queue.count == 0
    assert redis.zscore(adm.keys.prs, PR) is None
    assert enqueue_pr(adm, _ref("sha1"), {"kind": "diff", "text": ""})
    assert adm.queue.count == 1
