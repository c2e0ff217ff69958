"""Wake-ups that arrive at the wrong moment, against a real Redis (no workers: each
test plays the worker by hand, in the order that used to lose a message).

A refused message and the release that would have woken it race: the worker holding
the slot can release it and signal after the other worker was refused but before that
worker parked the message in the line. The signal then finds an empty line, and the
message waits for its own due time (for a concurrency refusal, the old lease's
deadline, up to a minute) with the slot idle.
"""

from __future__ import annotations

from typing import cast

import pytest
import redis as redis_py

from scheduler.admission import Admission, Fairness
from scheduler.state.jobs import fetch_job, review_queue
from scheduler.state.records import read_pr
from scheduler.waker import Waker


@pytest.fixture(params=["fair", "fifo"])
def adm(request: pytest.FixtureRequest, redis: redis_py.Redis, unique: str) -> Admission:
    return Admission(
        redis,
        review_queue(f"q-{unique}", redis),
        prefix=f"t:{unique}",
        fairness=Fairness(mode=request.param),
    )


def take(adm: Admission) -> tuple[str, int]:
    job_id = adm.queue.pop_job_id()
    assert job_id is not None, "queue is empty"
    _, member, dispatch = fetch_job(job_id, adm.redis).args
    assert adm.claim(member, dispatch, 60_000) is not None
    return member, dispatch


def status(adm: Admission, pr: str, mid: str) -> str:
    view = read_pr(adm.redis, adm.keys, pr)
    assert view is not None
    return view.messages[mid].status


def test_a_slot_freed_before_the_refused_message_joined_the_line_still_wakes_it(
    adm: Admission,
) -> None:
    adm.submit("o/r#1", "sha", ["a"], files=1, plan={})
    member, dispatch = take(adm)
    started = adm.now_ms()  # the run asks for budget and is refused: concurrency
    adm.signal("acct", adm.now_ms())  # the holder releases and signals...
    waker = Waker(adm)
    assert waker.leader()
    assert waker.step(block=False) == 0  # ...to an empty line
    lease_deadline = adm.now_ms() + 60_000
    assert adm.park(
        member,
        dispatch,
        until_ms=lease_deadline,
        reason="acct: concurrency",
        line="acct",
        since_ms=started,
    )
    assert waker.step(block=False) == 1  # not a minute later
    assert status(adm, "o/r#1", "1.0") == "queued"


def test_a_release_before_the_run_began_asked_wakes_no_one(adm: Admission) -> None:
    """The refusal saw that release already: waking the message would only have it
    refused again, and again, while the slot stays busy."""
    adm.submit("o/r#2", "sha", ["a"], files=1, plan={})
    member, dispatch = take(adm)
    adm.signal("acct", adm.now_ms())
    waker = Waker(adm)
    assert waker.leader() and waker.step(block=False) == 0
    started = adm.now_ms() + 1
    far = adm.now_ms() + 60_000
    assert adm.park(
        member, dispatch, until_ms=far, reason="acct: concurrency", line="acct", since_ms=started
    )
    assert waker.step(block=False) == 0
    assert status(adm, "o/r#2", "1.0") == "waiting"


def test_a_leftover_line_entry_leaves_the_line_and_the_line_keeps_a_due_time(
    adm: Admission,
) -> None:
    """Entries whose message is no longer waiting in that line are dropped inside the
    wake's own transaction; after ten of them the waker stops for this round but
    leaves the line a due time, so the message behind them is not forgotten."""
    adm.submit("o/r#3", "sha", ["a"], files=1, plan={})
    member, dispatch = take(adm)
    far = adm.now_ms() + 3_600_000
    assert adm.park(member, dispatch, until_ms=far, reason="acct: window", line="acct")
    line = adm.keys.line("acct")
    leftovers = {f"o/gone#{n}|1.0": -1.0 - n for n in range(12)}  # ahead of the real one
    adm.redis.zadd(line, cast(dict[str | bytes, float], leftovers))
    adm.redis.zrem(adm.keys.line_due, "acct")
    waker = Waker(adm)
    assert waker.leader()
    adm.signal("acct")
    assert waker.step(block=False) == 0
    assert adm.redis.zcard(line) == 3  # ten leftovers gone, two and the message left
    due = adm.redis.zscore(adm.keys.line_due, "acct")
    assert due is not None and due <= adm.now_ms() + adm.fallback_ms
    adm.signal("acct")
    assert waker.step(block=False) == 1
    assert status(adm, "o/r#3", "1.0") == "queued"
    assert adm.redis.zcard(line) == 0


def test_a_timed_message_listed_in_a_line_by_mistake_stays_timed(adm: Admission) -> None:
    adm.submit("o/r#4", "sha", ["a"], files=1, plan={})
    member, dispatch = take(adm)
    due = adm.now_ms() + 3_600_000
    assert adm.park(member, dispatch, until_ms=due, reason="o/r#4 over its share", line=None)
    adm.redis.zadd(adm.keys.line("acct"), {member: 0})
    assert not adm.wake(member, "acct")
    assert adm.redis.zcard(adm.keys.line("acct")) == 0
    assert adm.redis.zscore(adm.keys.timed, member) == due
    assert status(adm, "o/r#4", "1.0") == "waiting"


def test_a_release_with_others_in_line_is_left_to_the_line(adm: Admission) -> None:
    """With someone already in line, the release woke that head (or the first to join
    after it wakes the line): a second wake would only churn the line."""
    adm.submit("o/r#5", "sha", ["a", "b"], files=2, plan={})
    first, d1 = take(adm)
    second, d2 = take(adm)
    far = adm.now_ms() + 60_000
    assert adm.park(first, d1, until_ms=far, reason="acct: concurrency", line="acct")
    started = adm.now_ms()
    adm.signal("acct", adm.now_ms())
    adm.redis.delete(adm.keys.wake)  # the waker took it (and moved `first`'s line on)
    assert adm.park(
        second, d2, until_ms=far, reason="acct: concurrency", line="acct", since_ms=started
    )
    assert adm.redis.lrange(adm.keys.wake, 0, -1) == [b""]  # only "read the due times"
