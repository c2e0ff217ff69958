"""Off-peak scheduling against a real Redis and real RQ queues: who is deferred, how a
deferred message is parked (no worker held) and woken at the off-peak start, and how a
person's "now" cuts the wait short."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import cast

import pytest
import redis as redis_py

from scheduler.admission import DEFER_MARK, Admission, plan_deferral
from scheduler.config import ReviewSettings, Settings
from scheduler.quota.plans import Account, OffPeakPolicy, get_preset
from scheduler.quota.timeofday import Calendar, RedisCalendar
from scheduler.state.jobs import fetch_job, review_queue
from scheduler.state.records import PrMeta, read_pr
from scheduler.waker import Waker
from workers import runtime as worker_runtime
from workers.jobs import review_message
from workers.runtime import RuntimeSpec

PEAK_START = dt.datetime(2026, 12, 8, 6, 0, tzinfo=dt.UTC)  # Tuesday, 14:00 UTC+8
PEAK_END = dt.datetime(2026, 12, 8, 10, 0, tzinfo=dt.UTC)
HOUR = 3_600_000


def ms(when: dt.datetime) -> int:
    return round(when.timestamp() * 1000)


def account(offpeak: OffPeakPolicy | None = None) -> Account:
    return Account(
        name="zai",
        provider="zai",
        base_url="https://zai.test/api/coding/paas/v4",
        api_key_env="RQ_OFFPEAK_KEY",
        plan=get_preset("zai-pro-v3"),
        offpeak=offpeak or OffPeakPolicy(min_messages=20, max_defer_ms=6 * HOUR),
    )


def test_who_is_deferred_and_until_when() -> None:
    in_peak = ms(PEAK_START) + HOUR  # 15:00 UTC+8
    wall = Calendar()  # the identity: the limiter's clock is the calendar
    big = PrMeta(pr="o/r#1", total=25, arrived_ms=in_peak)
    deferral = plan_deferral(big, account(), wall, in_peak)
    assert deferral is not None and deferral.until_ms == ms(PEAK_END)
    assert deferral.reason.startswith(DEFER_MARK) and deferral.discount == 0.5
    small = big.model_copy(update={"total": 19})
    assert plan_deferral(small, account(), wall, in_peak) is None  # small: never
    asked = big.model_copy(update={"now": True})
    assert plan_deferral(asked, account(), wall, in_peak) is None  # a person asked
    assert plan_deferral(big, account(), wall, ms(PEAK_END)) is None  # off-peak already
    # Arrived at 02:00 UTC: by 08:00 UTC it has waited its 6 h max_defer, so it runs.
    early = big.model_copy(update={"arrived_ms": ms(PEAK_START) - 4 * HOUR})
    assert plan_deferral(early, account(), wall, ms(PEAK_START) + 2 * HOUR) is None
    # Arrived at 03:30 UTC: its max_defer deadline, 09:30, comes before the off-peak
    # start (10:00), so it waits only until then.
    later = big.model_copy(update={"arrived_ms": ms(PEAK_START) - int(2.5 * HOUR)})
    capped = plan_deferral(later, account(), wall, in_peak)
    assert capped is not None and capped.until_ms == ms(PEAK_START) + int(3.5 * HOUR)
    off = OffPeakPolicy(defer="off")
    assert plan_deferral(big, account(off), wall, in_peak) is None


@pytest.fixture
def adm(redis: redis_py.Redis, unique: str) -> Admission:
    return Admission(redis, review_queue(f"q-{unique}", redis), prefix=f"t:{unique}")


def take(adm: Admission) -> tuple[str, int, PrMeta]:
    job_id = adm.queue.pop_job_id()
    assert job_id is not None, "queue is empty"
    _, member, dispatch = fetch_job(job_id, adm.redis).args
    claimed = adm.claim(member, dispatch, 60_000)
    assert claimed is not None
    return member, dispatch, claimed.meta


def test_a_deferred_message_waits_in_redis_and_wakes_at_the_off_peak_start(
    adm: Admission,
) -> None:
    adm.submit("o/big#1", "sha", [f"m{n}" for n in range(25)], files=25, plan={})
    member, dispatch, meta = take(adm)
    now = adm.now_ms()
    # A calendar that reaches the off-peak start 1.5 s from now.
    calendar = Calendar(real_ms=now, calendar_ms=ms(PEAK_END) - 1500, scale=1)
    deferral = plan_deferral(meta, account(), calendar, now)
    assert deferral is not None and deferral.until_ms == now + 1500
    assert adm.defer(member, dispatch, deferral)
    view = read_pr(adm.redis, adm.keys, "o/big#1")
    assert view is not None
    state = view.messages["1.0"]
    assert (state.status, state.retry_at_ms, state.retries) == ("waiting", now + 1500, 0)
    assert view.meta.deferred_until_ms == now + 1500 and view.meta.deferred_reason
    # Parked in Redis: on its own timer, not running, no RQ job for it.
    assert adm.redis.zscore(adm.keys.timed, member) == now + 1500
    assert adm.redis.zcard(adm.keys.running) == 0
    assert [j.args[1] for j in adm.queue.get_jobs() if j] == ["o/big#1|1.1"]
    assert adm.redis.zscore(adm.keys.deferred, "o/big#1") == now + 1500
    assert adm.redis.hget(adm.keys.deferrals, "zai") == b"1"
    waker = Waker(adm)
    assert waker.leader()
    assert waker.step(block=False) == 0  # not due yet
    time.sleep(1.6)
    assert waker.step(block=False) == 1  # due: back on the queue, front first
    assert [j.args[1] for j in adm.queue.get_jobs() if j] == [member, "o/big#1|1.1"]
    member, dispatch, meta = take(adm)
    assert plan_deferral(meta, account(), calendar, adm.now_ms()) is None  # off-peak now
    adm.end_deferral("o/big#1")
    ended = adm.read_meta("o/big#1")
    assert ended is not None and ended.deferred_since_ms is None
    assert 1500 <= ended.deferred_ms < 10_000
    assert adm.redis.zscore(adm.keys.deferred, "o/big#1") is None


def test_now_wakes_a_deferred_pr_at_once_and_keeps_it_from_waiting_again(
    adm: Admission,
) -> None:
    adm.submit("o/big#2", "sha", [f"m{n}" for n in range(25)], files=25, plan={})
    member, dispatch, meta = take(adm)
    now = adm.now_ms()
    calendar = Calendar(real_ms=now, calendar_ms=ms(PEAK_START) + HOUR, scale=1)
    deferral = plan_deferral(meta, account(), calendar, now)
    assert deferral is not None and adm.defer(member, dispatch, deferral)
    assert adm.expedite("o/big#2") == 1
    assert member in [j.args[1] for j in adm.queue.get_jobs() if j]
    member, dispatch, meta = take(adm)
    assert meta.now and plan_deferral(meta, account(), calendar, adm.now_ms()) is None
    assert adm.expedite("never/seen#1") == 0


def test_a_worker_defers_without_calling_the_provider(
    redis: redis_py.Redis, redis_url: str, unique: str
) -> None:
    """`review_message` itself: in peak, a large PR's message is parked for off-peak
    and the job ends; the account's key is not even set, so a call would fail."""
    settings = Settings(accounts=[account()], review=ReviewSettings())
    prefix = f"t:{unique}"
    spec = RuntimeSpec(
        settings=settings,
        redis_url=redis_url,
        prefix=prefix,
        queue_name=f"q-{unique}",
        model="glm-5.1",
        limiter_prefix=f"lim-{unique}",
        calendar_key=f"{prefix}:calendar",
        env={},
    )
    worker_runtime.configure(spec)
    try:
        rt = worker_runtime.runtime()
        now = rt.admission.now_ms()
        calendar = Calendar(real_ms=now, calendar_ms=ms(PEAK_START) + HOUR, scale=1)
        RedisCalendar(redis, f"{prefix}:calendar").publish(calendar, 60)
        rt.admission.submit("o/big#3", "sha", ["m"] * 25, files=25, plan={})
        job_id = rt.queue.pop_job_id()
        assert job_id is not None
        _, member, dispatch = fetch_job(job_id, redis).args
        said = review_message(prefix, member, dispatch)
        assert said.startswith(DEFER_MARK)
        view = read_pr(redis, rt.admission.keys, "o/big#3")
        assert view is not None and view.messages["1.0"].status == "waiting"
        assert cast(int, redis.zcard(rt.admission.keys.running)) == 0
        assert rt.route.entries[0].limiter.status().windows[0].used == 0  # nothing spent
    finally:
        worker_runtime.configure(spec)  # forget this process's runtime


def test_the_now_label_reviews_at_once_and_wakes_a_deferred_pr(redis_url: str, unique: str) -> None:
    """GitHub: a PR opened with the label is never deferred; the label added to a PR
    already waiting for off-peak wakes it (and that delivery queues nothing new)."""
    from webhook_support import gh_pr, serve_hook

    with serve_hook(redis_url, f"wh-{unique}") as hook:
        labelled = gh_pr("opened", number=1, sha="1" * 40)
        labelled["pull_request"]["labels"] = [{"name": "reviewq:now"}]
        assert hook.github(labelled, delivery=f"{unique}-1").json()["status"] == "enqueued"
        meta = hook.meta("octo/app#1")
        assert meta is not None and meta.now
        assert hook.github(gh_pr("opened", number=2), delivery=f"{unique}-2").status_code == 202
        adm = hook.admission
        adm.submit("octo/app#2", "a" * 40, ["m"] * 25, files=25, plan={})
        member, dispatch, meta = _claim_first(adm, "octo/app#2")
        calendar = Calendar(real_ms=adm.now_ms(), calendar_ms=ms(PEAK_START) + HOUR, scale=1)
        deferral = plan_deferral(meta, account(), calendar, adm.now_ms())
        assert deferral is not None and adm.defer(member, dispatch, deferral)
        added = gh_pr("labeled", number=2)
        added["label"] = {"name": "reviewq:now"}
        answer = hook.github(added, delivery=f"{unique}-3").json()
        assert answer["status"] == "ignored" and "reviewq:now" in answer["detail"]
        woke = read_pr(adm.redis, adm.keys, "octo/app#2")
        assert woke is not None and woke.meta.now
        assert woke.messages["1.0"].status == "queued"
        other = gh_pr("labeled", number=2)
        other["label"] = {"name": "bug"}
        assert hook.github(other, delivery=f"{unique}-4").json()["status"] == "ignored"


def _claim_first(adm: Admission, pr: str) -> tuple[str, int, PrMeta]:
    """Claim `pr`'s first queued message, whatever else is on the queue."""
    for job in adm.queue.get_jobs():
        if job is not None and job.args[1].startswith(pr + "|"):
            _, member, dispatch = job.args
            claimed = adm.claim(member, dispatch, 60_000)
            assert claimed is not None
            return member, dispatch, claimed.meta
    raise AssertionError(f"no queued message of {pr}")


def test_enqueue_now_marks_the_pr_and_wakes_its_deferred_messages(
    tmp_path: Path, redis_url: str, unique: str
) -> None:
    from operator_fixtures import DIFF, deployment, invoke, write_config

    config = write_config(tmp_path, redis_url, f"q-{unique}")
    diff = tmp_path / "pr.diff"
    diff.write_text(DIFF)
    pr = f"{unique}-big"
    first = invoke(config, "enqueue", "--diff", str(diff), "--pr", pr, "--now", "--json")
    assert first.exit_code == 0, first.output
    said = json.loads(first.output)
    assert said["queued"] and said["now"] is True and said["woken"] == 0
    _, dep = deployment(config)
    try:
        meta = dep.admission.read_meta(pr)
        assert meta is not None and meta.now
        again = invoke(config, "enqueue", "--diff", str(diff), "--pr", pr, "--now")
        assert again.exit_code == 0 and "never deferred to off-peak" in again.output
    finally:
        dep.close()


def test_inspect_shows_each_deferred_pr_its_reason_start_and_savings(
    redis: redis_py.Redis, unique: str
) -> None:
    from rich.console import Console

    from scheduler.cli.inspect_view import render_snapshot
    from scheduler.ops.deployment import deployment_prefix
    from scheduler.ops.inspection import snapshot

    settings = Settings(queue_name=f"q-{unique}", accounts=[account()])
    queue = review_queue(settings.queue_name, redis)
    adm = Admission(redis, queue, prefix=deployment_prefix(settings))
    # 25 messages estimated at 250 credits in all at peak: 10 credits each.
    estimate = {"credits_5h": 250_000, "credits_week": 250_000}
    adm.submit("o/big#9", "sha", ["m"] * 25, files=25, plan={}, estimate=estimate)
    member, dispatch, meta = take(adm)
    now = adm.now_ms()
    calendar = Calendar(real_ms=now, calendar_ms=ms(PEAK_START) + HOUR, scale=1)
    deferral = plan_deferral(meta, account(), calendar, now)
    assert deferral is not None and adm.defer(member, dispatch, deferral)
    [shown] = snapshot(redis, settings).deferred
    assert (shown.pr, shown.until_ms) == ("o/big#9", now + 3 * HOUR)
    assert shown.saved_milli == 125_000  # 25 messages left x 10 credits x (1 - 0.5)
    assert shown.reason.startswith(DEFER_MARK) and "10:00 UTC" in shown.reason
    console = Console(record=True, width=200)
    console.print(render_snapshot(snapshot(redis, settings)))
    text = console.export_text()
    assert "Waiting for off-peak prices" in text and "125 credits" in text


def test_after_its_wait_a_deferred_pr_stands_behind_prs_that_arrived_meanwhile(
    adm: Admission,
) -> None:
    """At the off-peak start every deferred PR wakes at once; a small PR arriving then
    must not wait for each of them to be served first."""
    adm.submit("o/big#4", "sha", [f"m{n}" for n in range(25)], files=25, plan={})
    member, dispatch, meta = take(adm)
    now = adm.now_ms()
    calendar = Calendar(real_ms=now, calendar_ms=ms(PEAK_START) + HOUR, scale=1)
    deferral = plan_deferral(meta, account(), calendar, now)
    assert deferral is not None and adm.defer(member, dispatch, deferral)
    assert adm.expedite("o/big#4") == 1  # its wait ends (here: a person asked)
    big = take(adm)
    adm.submit("o/small#5", "sha", ["m"], files=1, plan={})
    small = _claim_first(adm, "o/small#5")
    for m, d, _ in (big, small):  # both refused by a busy account: they join its line
        assert adm.park(m, d, until_ms=adm.now_ms() + 60_000, reason="busy", line="zai")
    first = adm.redis.zrange(adm.keys.line("zai"), 0, -1)
    assert [m.decode() for m in first] == [small[0], big[0]]
