"""Admission and the waker against a real Redis and real RQ queues (no workers here:
each test plays the worker by hand, so every transition can be checked in turn)."""

from __future__ import annotations

import time
from typing import cast

import pytest
import redis as redis_py
from rq.job import Job

from scheduler.admission import FINALIZE_JOB, REVIEW_JOB, Admission, Fairness, job_id_for
from scheduler.state.jobs import fetch_job, review_queue
from scheduler.state.records import read_pr
from scheduler.waker import Waker


@pytest.fixture
def adm(redis: redis_py.Redis, unique: str) -> Admission:
    return Admission(redis, review_queue(f"q-{unique}", redis), prefix=f"t:{unique}")


def queued(adm: Admission) -> list[Job]:
    return [j for j in adm.queue.get_jobs() if j is not None]


def take(adm: Admission, claim_ms: int = 60_000) -> tuple[str, int]:
    """Pop the queue's first job the way a worker would and claim its message."""
    job_id = adm.queue.pop_job_id()
    assert job_id is not None, "queue is empty"
    job = fetch_job(job_id, adm.redis)
    assert job.func_name == REVIEW_JOB
    _, member, dispatch = job.args
    assert adm.claim(member, dispatch, claim_ms) is not None
    return member, dispatch


def finish(adm: Admission, member: str, dispatch: int) -> None:
    assert adm.finish(
        member, dispatch, ok=True, reason=None, account="a", cost={"w": 1000}, reply="{}"
    )


def test_cap_keeps_a_big_pr_to_a_few_jobs_and_refills_as_they_finish(adm: Admission) -> None:
    adm.submit("o/big#1", "sha1", [f"m{n}" for n in range(5)], files=5, plan={})
    assert [j.args[1] for j in queued(adm)] == ["o/big#1|1.0", "o/big#1|1.1"]
    member, dispatch = take(adm)
    finish(adm, member, dispatch)
    assert [j.args[1] for j in queued(adm)] == ["o/big#1|1.1", "o/big#1|1.2"]
    view = read_pr(adm.redis, adm.keys, "o/big#1")
    assert view is not None and view.meta.inflight == 2
    assert view.counts() == {"done": 1, "queued": 2, "pending": 2}


def test_fifo_queues_everything_and_the_last_finish_queues_finalize(
    redis: redis_py.Redis, unique: str
) -> None:
    adm = Admission(
        redis,
        review_queue(f"q-{unique}", redis),
        prefix=f"t:{unique}",
        fairness=Fairness(mode="fifo"),
    )
    adm.submit("o/r#2", "sha", ["a", "b", "c"], files=3, plan={})
    assert len(queued(adm)) == 3
    for _ in range(3):
        finish(adm, *take(adm))
    jobs = queued(adm)
    assert [j.func_name for j in jobs] == [FINALIZE_JOB]
    assert jobs[0].args[1:] == ("o/r#2", 1)
    meta = adm.read_meta("o/r#2")
    assert meta is not None and meta.status == "finishing"
    assert adm.mark_finished("o/r#2", 1) and not adm.mark_finished("o/r#2", 1)


def test_a_stale_or_duplicate_token_does_nothing(adm: Admission) -> None:
    adm.submit("o/r#3", "sha", ["a"], files=1, plan={})
    member, dispatch = take(adm)
    assert adm.claim(member, dispatch, 60_000) is None  # RQ delivered it twice
    assert adm.claim(member, dispatch + 1, 60_000) is None
    assert not adm.finish(
        member, dispatch + 1, ok=True, reason=None, account=None, cost={}, reply=None
    )
    finish(adm, member, dispatch)
    assert not adm.park(member, dispatch, until_ms=0, reason="x", line=None)


def test_a_new_head_cancels_unstarted_work_and_keeps_running_work_as_stale(adm: Admission) -> None:
    adm.submit("o/r#4", "old", ["a", "b", "c"], files=3, plan={})
    running, dispatch = take(adm)
    gen = adm.submit("o/r#4", "new", ["x"], files=1, plan={})
    assert gen == 2
    view = read_pr(adm.redis, adm.keys, "o/r#4")
    assert view is not None
    old = {k: m.status for k, m in view.messages.items() if m.gen == 1}
    assert old == {"1.0": "running", "1.1": "cancelled", "1.2": "cancelled"}
    # the old queued job still sits on the queue: it finds its message cancelled
    stale_job = next(j for j in queued(adm) if j.args[1] == "o/r#4|1.1")
    assert adm.claim(stale_job.args[1], stale_job.args[2], 60_000) is None
    assert adm.finish(running, dispatch, ok=True, reason=None, account="a", cost={}, reply="{}")
    after = read_pr(adm.redis, adm.keys, "o/r#4")
    assert after is not None
    assert after.messages["1.0"].status == "done" and after.messages["1.0"].stale
    assert after.meta.inflight == 1 and after.counts() == {"queued": 1}


def test_a_plan_job_run_twice_plans_its_head_once(adm: Admission) -> None:
    """A worker killed after `submit` but before RQ recorded its plan job as done has
    the job requeued; the second run must not re-plan (and re-spend) the head."""
    adm.register("o/r#11", {}, "sha")
    gen = adm.submit("o/r#11", "sha", ["a", "b", "c"], files=3, plan={})
    member, dispatch = take(adm)
    again = adm.submit("o/r#11", "sha", ["a", "b", "c"], files=3, plan={})
    assert again == gen == 1
    view = read_pr(adm.redis, adm.keys, "o/r#11")
    assert view is not None and set(view.messages) == {"1.0", "1.1", "1.2"}
    assert view.counts() == {"running": 1, "queued": 1, "pending": 1}
    finish(adm, member, dispatch)  # the running message was not superseded


def test_a_run_whose_claim_redis_forgot_still_finishes_and_parks(adm: Admission) -> None:
    """Redis restarted from an AOF that lacks its last second: a worker's claim is gone
    (its message is `queued` under the same dispatch again) while the worker goes on.
    Its finish (or park) must land, or the message stays queued with no job left."""
    adm.submit("o/r#12", "sha", ["a", "b"], files=2, plan={})
    key = adm.keys.msgs("o/r#12")
    before = {mid: adm.redis.hget(key, mid) for mid in ("1.0", "1.1")}
    first, d1 = take(adm)
    second, d2 = take(adm)
    adm.redis.hset(key, mapping=before)  # both claims forgotten
    assert adm.finish(first, d1, ok=True, reason=None, account="a", cost={}, reply="{}")
    assert adm.park(second, d2, until_ms=0, reason="window", line=None)
    assert not adm.finish(second, d2 + 1, ok=True, reason=None, account="a", cost={}, reply="{}")
    view = read_pr(adm.redis, adm.keys, "o/r#12")
    assert view is not None
    assert {m: s.status for m, s in view.messages.items()} == {"1.0": "done", "1.1": "waiting"}


def test_a_freed_slot_moves_the_head_of_the_line_at_once(adm: Admission) -> None:
    adm.submit("o/r#5", "sha", ["a", "b"], files=2, plan={})
    first, d1 = take(adm)
    second, d2 = take(adm)
    far = adm.now_ms() + 3_600_000
    assert adm.park(first, d1, until_ms=far, reason="acct: concurrency", line="acct")
    assert adm.park(second, d2, until_ms=far, reason="acct: concurrency", line="acct")
    # Nothing is due for an hour and the waker may block for a minute: a step that
    # moves the head at once can only have been woken by the signal.
    waker = Waker(adm, max_block_ms=60_000)
    assert waker.leader()
    assert waker.step(block=False) == 0  # nothing due, no slot freed
    adm.signal("acct")
    t0 = adm.now_ms()
    assert waker.step(block=True) == 1
    assert adm.now_ms() - t0 < 30_000, "the step waited out its block, not the signal"
    assert adm.redis.llen(adm.keys.wake) == 0, "the signal was not consumed"
    jobs = queued(adm)
    assert [j.args[1] for j in jobs] == [first]  # the head, not both
    view = read_pr(adm.redis, adm.keys, "o/r#5")
    assert view is not None
    assert view.messages["1.0"].status == "queued" and view.messages["1.0"].dispatch == d1 + 1
    assert view.messages["1.1"].status == "waiting" and view.messages["1.1"].waits == 1
    assert view.messages["1.1"].retries == 0  # waiting for budget is not an error retry


def test_fair_line_puts_a_newcomer_ahead_of_a_big_prs_later_messages(adm: Admission) -> None:
    adm.submit("o/big#6", "sha", ["a", "b", "c"], files=3, plan={})
    far = adm.now_ms() + 3_600_000
    big = [take(adm), take(adm)]
    for member, dispatch in big:
        adm.park(member, dispatch, until_ms=far, reason="c", line="acct")
    adm.submit("o/small#7", "sha", ["s"], files=1, plan={})
    small = take(adm)
    adm.park(*small, until_ms=far, reason="c", line="acct")
    line = [m.decode() for m in cast(list[bytes], adm.redis.zrange(adm.keys.line("acct"), 0, -1))]
    assert line.index("o/small#7|1.0") < line.index("o/big#6|1.1")


def test_a_lapsed_claim_runs_the_message_again(adm: Admission) -> None:
    adm.submit("o/r#8", "sha", ["a"], files=1, plan={})
    member, dispatch = take(adm, claim_ms=50)
    time.sleep(0.12)
    assert Waker(adm).step(block=False) == 1
    (job,) = queued(adm)
    assert job.args[1:] == (member, dispatch + 1)
    assert job.id == job_id_for(adm.keys.prefix, member, dispatch + 1)
    view = read_pr(adm.redis, adm.keys, "o/r#8")
    assert view is not None and view.messages["1.0"].runs == 1
    assert not adm.finish(member, dispatch, ok=True, reason=None, account=None, cost={}, reply=None)


def test_only_lapsed_runs_count_towards_failing_a_message(adm: Admission) -> None:
    """A message that waited for budget six times was claimed six times; its worker
    dying once must run it again, not fail it as 'worker lost 6 times'."""
    adm.submit("o/r#13", "sha", ["a"], files=1, plan={})
    for _ in range(6):
        member, dispatch = take(adm)
        assert adm.park(member, dispatch, until_ms=0, reason="window", line=None)
        assert Waker(adm).step(block=False) == 1
    member, dispatch = take(adm, claim_ms=50)
    time.sleep(0.12)
    assert Waker(adm).step(block=False) == 1
    view = read_pr(adm.redis, adm.keys, "o/r#13")
    assert view is not None
    state = view.messages["1.0"]
    assert (state.status, state.runs, state.waits, state.lost) == ("queued", 7, 6, 1)


def test_timed_waits_wake_when_due_and_not_before(adm: Admission) -> None:
    """On Redis's clock: a step before the due time moves nothing, the blocking step
    moves it once due, and it blocked until the due time, not for its whole cap."""
    adm.submit("o/r#9", "sha", ["a"], files=1, plan={})
    member, dispatch = take(adm)
    due = adm.now_ms() + 300
    adm.park(member, dispatch, until_ms=due, reason="o/r#9 over its share", line=None)
    waker = Waker(adm, max_block_ms=60_000)
    early = waker.step(block=False)
    if adm.now_ms() < due:  # else this machine stalled 300 ms: "before" went untested
        assert early == 0
    moved = early
    for _ in range(5):  # BLPOP's timeout is rounded: the step may wake a hair early
        if moved:
            break
        moved = waker.step(block=True)
    assert moved == 1 and adm.now_ms() >= due
    assert adm.now_ms() - due < 30_000, "the step waited out its cap, not the due time"


def test_cancel_leaves_running_work_and_clears_the_rest(adm: Admission) -> None:
    adm.submit("o/r#10", "sha", ["a", "b", "c"], files=3, plan={})
    take(adm)
    assert adm.cancel("o/r#10", "PR closed") == 2
    view = read_pr(adm.redis, adm.keys, "o/r#10")
    assert view is not None and view.counts() == {"running": 1, "cancelled": 2}
    assert adm.redis.llen(adm.keys.backlog("o/r#10")) == 0


def test_two_deployments_on_one_redis_never_share_a_job(redis: redis_py.Redis, unique: str) -> None:
    """RQ keeps jobs at `rq:job:<id>` whatever the queue. When two deployments (or the
    two policies of one `simulate`) shared ids, the second's job took over the first's
    key with its result TTL still set, and vanished from the queue before it ran."""
    first, second = (
        Admission(redis, review_queue(f"q{n}-{unique}", redis), prefix=f"t{n}:{unique}")
        for n in (1, 2)
    )
    first.submit("o/r#20", "sha", ["a"], files=1, plan={})
    member, dispatch = take(first)
    finish(first, member, dispatch)
    old = fetch_job(job_id_for(first.keys.prefix, member, dispatch), redis)
    old.cleanup(ttl=5)  # a finished job keeps its key only for its result TTL
    second.submit("o/r#20", "sha", ["a"], files=1, plan={})
    (job,) = queued(second)
    assert job.id != old.id
    assert redis.ttl(job.key) == -1  # no TTL: it waits in the queue as long as it must
