"""Queued messages whose RQ job a Redis crash lost, against a real Redis.

Each test replays by hand what survives a crash that loses the last second of
writes (AOF `everysec`): a worker's pop of the job without its claim, or a claim
forgotten while its worker still runs the message. The sweep gets explicit times
(Redis ms), so no test sleeps through a grace period.
"""

from __future__ import annotations

from typing import cast

import pytest
import redis as redis_py

from scheduler.admission import MAX_RUNS, Admission, job_id_for
from scheduler.state.jobs import fetch_job, review_queue
from scheduler.state.keys import queued_entry
from scheduler.state.records import MessageState, read_pr
from scheduler.waker.lostjobs import LostJobSweep

GRACE = 3_000


@pytest.fixture
def adm(redis: redis_py.Redis, unique: str) -> Admission:
    return Admission(redis, review_queue(f"q-{unique}", redis), prefix=f"t:{unique}")


def state_of(adm: Admission, member: str) -> MessageState:
    pr, _, mid = member.rpartition("|")
    view = read_pr(adm.redis, adm.keys, pr)
    assert view is not None
    return view.messages[mid]


def pop(adm: Admission) -> tuple[str, int]:
    """What a worker's BLMOVE does: the job leaves the queue (to RQ's intermediate
    list); the crash then loses everything after it."""
    job_id = adm.queue.pop_job_id()
    assert job_id is not None, "queue is empty"
    _, member, dispatch = fetch_job(job_id, adm.redis).args
    return member, dispatch


def entries(adm: Admission) -> dict[str, float]:
    raw = cast(list[tuple[bytes, float]], adm.redis.zrange(adm.keys.queued, 0, -1, withscores=True))
    return {e.decode(): s for e, s in raw}


def lose(adm: Admission, sweep: LostJobSweep, now: int) -> int:
    """Two passes a grace apart: the first only marks, the second runs it again."""
    assert sweep.sweep(now) == 0
    return sweep.sweep(now + GRACE)


def test_a_popped_job_whose_claim_was_lost_runs_again_after_the_grace(adm: Admission) -> None:
    adm.submit("o/r#1", "sha", ["a"], files=1, plan={})
    member, dispatch = pop(adm)
    sweep, now = LostJobSweep(adm, grace_ms=GRACE), adm.now_ms()
    assert sweep.sweep(now) == 0
    assert entries(adm) == {queued_entry(member, dispatch): now}
    assert sweep.sweep(now + GRACE - 1) == 0  # a slow claim is not a lost one
    assert sweep.sweep(now + GRACE) == 1
    state = state_of(adm, member)
    assert (state.status, state.dispatch, state.lost) == ("queued", dispatch + 1, 1)
    assert adm.queue.job_ids == [job_id_for(adm.keys.prefix, member, dispatch + 1)]
    assert entries(adm) == {queued_entry(member, dispatch + 1): 0}
    assert adm.claim(member, dispatch, 60_000) is None  # the old job, if it ran, is stale
    assert adm.claim(member, dispatch + 1, 60_000) is not None
    assert entries(adm) == {}


def test_a_job_whose_record_is_gone_too_runs_again(adm: Admission) -> None:
    adm.submit("o/r#2", "sha", ["a"], files=1, plan={})
    member, dispatch = pop(adm)
    adm.redis.delete(f"rq:job:{job_id_for(adm.keys.prefix, member, dispatch)}")
    assert lose(adm, LostJobSweep(adm, grace_ms=GRACE), adm.now_ms()) == 1
    assert state_of(adm, member).dispatch == dispatch + 1


def test_a_job_waiting_on_the_queue_is_never_taken_for_lost(adm: Admission) -> None:
    """However long a big backlog keeps it there."""
    adm.submit("o/r#3", "sha", ["a", "b"], files=2, plan={})
    sweep, now = LostJobSweep(adm, grace_ms=GRACE), adm.now_ms()
    for hour in range(5):
        assert sweep.sweep(now + hour * 3_600_000) == 0
    assert set(entries(adm).values()) == {0}
    assert len(adm.queue.job_ids) == 2


def test_a_mark_is_cleared_when_the_job_turns_up_on_the_queue(adm: Admission) -> None:
    adm.submit("o/r#4", "sha", ["a"], files=1, plan={})
    member, dispatch = pop(adm)
    sweep, now = LostJobSweep(adm, grace_ms=GRACE), adm.now_ms()
    sweep.sweep(now)
    adm.redis.rpush(adm.queue.key, job_id_for(adm.keys.prefix, member, dispatch))
    assert sweep.sweep(now + GRACE) == 0
    assert entries(adm) == {queued_entry(member, dispatch): 0}


def test_a_forgotten_claim_is_taken_back_by_its_heartbeat_and_not_run_twice(
    adm: Admission,
) -> None:
    adm.submit("o/r#5", "sha", ["a"], files=1, plan={})
    before = adm.redis.hget(adm.keys.msgs("o/r#5"), "1.0")
    member, dispatch = pop(adm)
    assert adm.claim(member, dispatch, 60_000) is not None
    # The crash: the claim's writes are gone, the worker still runs the message.
    assert before is not None
    adm.redis.hset(adm.keys.msgs("o/r#5"), "1.0", before)
    adm.redis.zrem(adm.keys.running, member)
    adm.redis.zadd(adm.keys.queued, {queued_entry(member, dispatch): 0})
    sweep, now = LostJobSweep(adm, grace_ms=GRACE), adm.now_ms()
    assert sweep.sweep(now) == 0
    assert adm.heartbeat(member, dispatch, 60_000)  # the next beat, a third of a claim on
    assert state_of(adm, member).status == "running"
    assert adm.redis.zscore(adm.keys.running, member) is not None
    assert sweep.sweep(now + GRACE) == 0
    assert entries(adm) == {}
    assert adm.finish(member, dispatch, ok=True, reason=None, account=None, cost={}, reply="r")
    assert state_of(adm, member).status == "done"


def test_a_heartbeat_does_not_take_back_a_run_that_moved_on(adm: Admission) -> None:
    adm.submit("o/r#6", "sha", ["a"], files=1, plan={})
    member, dispatch = pop(adm)
    assert lose(adm, LostJobSweep(adm, grace_ms=GRACE), adm.now_ms()) == 1
    assert not adm.heartbeat(member, dispatch, 60_000)
    assert state_of(adm, member).status == "queued"


def test_entries_of_runs_that_ended_otherwise_are_dropped(adm: Admission) -> None:
    """A cancelled message's job runs, its claim is refused, and it leaves the queue:
    its entry goes at the sweep's second look, with no new run."""
    adm.submit("o/r#7", "sha", ["a"], files=1, plan={})
    assert adm.cancel("o/r#7") == 1
    member, dispatch = pop(adm)
    assert adm.claim(member, dispatch, 60_000) is None
    assert lose(adm, LostJobSweep(adm, grace_ms=GRACE), adm.now_ms()) == 0
    assert entries(adm) == {}
    assert adm.queue.job_ids == []


def test_a_run_lost_again_and_again_fails_its_message_and_the_pr_finishes(
    adm: Admission,
) -> None:
    adm.submit("o/r#8", "sha", ["a"], files=1, plan={})
    sweep, now = LostJobSweep(adm, grace_ms=GRACE), adm.now_ms()
    for n in range(MAX_RUNS):
        pop(adm)
        assert lose(adm, sweep, now + n * 2 * GRACE) == 1
    state = state_of(adm, "o/r#8|1.0")
    assert (state.status, state.lost) == ("failed", MAX_RUNS)
    assert state.reason is not None and "lost 6 times" in state.reason
    assert entries(adm) == {}
    meta = adm.read_meta("o/r#8")
    assert meta is not None and (meta.status, meta.inflight) == ("finishing", 0)
    (finalize,) = adm.queue.job_ids
    assert finalize == job_id_for(adm.keys.prefix, "o/r#8", meta.gen, "fin")
