"""The RQ entry points, kept thin: each one reads ids, asks admission, acts, reports.

- `plan_pr`: a PR's files become planned messages, handed to admission.
- `review_message`: one message: claim it, take budget and call a provider through
  `attempt`, then finish it or park it. Parking is how waiting for budget looks: the
  job ends at once, the worker is free, and the waker queues a fresh job for the
  message when its budget frees. No job ever sleeps or requeues itself.
- `finalize_pr`: the replies of one PR head become one review, sent to the sink.

A message's request id is `<member>.r<retries>`: the same across a crash and rerun
(the limiter replays the charge instead of charging twice), new for an error retry
(the provider may well have counted the failed request).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from types import TracebackType
from typing import Any, cast

from scheduler.admission import Claimed
from scheduler.state.records import decode_messages
from scheduler.state.refs import PullRequestRef
from scheduler.waker import schedule_finalize, schedule_plan
from workers.forge.github import (
    GitHubRateLimited,
    GitHubServerError,
    GitHubTransportError,
    PullRequestInfo,
)
from workers.providers.attempt import (
    Failed,
    Outcome,
    Parked,
    Retry,
    Served,
    Wait,
    attempt,
    jittered_backoff,
)
from workers.providers.client import request_cost
from workers.providers.failover import Choice
from workers.review.changes import ChangedFile
from workers.review.diff import parse_unified_diff
from workers.review.plan import PlannedMessage, ReviewPlan
from workers.review.planning import build_request, estimate, plan_review
from workers.review.replies import Reply, gather, parse_reply
from workers.runtime import Runtime, runtime

__all__ = ["GITLAB_UNSUPPORTED", "finalize_pr", "plan_pr", "review_message"]

log = logging.getLogger(__name__)

# A sink that cannot deliver for now (a rate limit, a 5xx, no answer) is tried again
# this many times, each after GitHub's retry time or a backoff, before the PR is
# marked done with the error.
FINALIZE_RETRIES = 8


GITLAB_UNSUPPORTED = (
    "GitLab merge requests cannot be reviewed yet: reviewq has no GitLab client for "
    "their files and comments; review the diff with `reviewq enqueue --diff FILE --pr ID`"
)


def plan_pr(prefix: str, ref_json: str, source: dict[str, Any], attempt: int = 0) -> str:
    """From a PR's files to messages. `source` is `{"kind": "github"}` (list the files
    over the API) or `{"kind": "diff", "text": ...}` (a local unified diff). `attempt`
    counts reruns after GitHub could not list the files for now (see `_retry_plan`)."""
    rt = _runtime(prefix)
    ref = PullRequestRef.model_validate_json(ref_json)
    if source.get("kind") == "gitlab":
        # Accepted at the door, but no GitLab client lists files or posts notes yet:
        # say so on the PR (inspect, results) instead of failing the job every time.
        rt.admission.cancel(ref.id, "unsupported", error=GITLAB_UNSUPPORTED)
        log.warning("%s: %s", ref.id, GITLAB_UNSUPPORTED)
        return GITLAB_UNSUPPORTED
    try:
        files = _files(rt, ref, source)
    except (GitHubRateLimited, GitHubServerError, GitHubTransportError) as exc:
        return _retry_plan(rt, ref, source, attempt, exc)
    except _HeadMoved as exc:
        return _head_moved(rt, ref, source, attempt, exc)
    plan = plan_review(files, rt.spec.planning, repo=_repo(ref), model=rt.spec.model)
    bodies = [m.model_dump_json() for m in plan.messages]
    info = plan.model_dump(mode="json", exclude={"messages"})
    cost = estimate(plan, rt.route.entries[0].account, rt.spec.model)
    gen = rt.admission.submit(
        ref.id, ref.head_sha, bodies, files=len(files), plan=info, estimate=cost
    )
    log.info(
        "planned %s@%s: %d messages, %d skipped",
        ref.id,
        ref.head_sha[:12],
        len(bodies),
        len(plan.skipped),
    )
    return f"gen {gen}: {len(bodies)} messages"


def _repo(ref: PullRequestRef) -> str | None:
    return f"{ref.owner}/{ref.repo}" if ref.owner and ref.repo else None


def _files(rt: Runtime, ref: PullRequestRef, source: dict[str, Any]) -> list[ChangedFile]:
    kind = source.get("kind")
    if kind == "diff":
        return parse_unified_diff(str(source.get("text", "")))
    if kind == "github":
        from workers.forge.github import GitHubClient

        if not (ref.owner and ref.repo and ref.number):
            raise ValueError(f"{ref.id}: a GitHub source needs owner, repo and number")
        client = GitHubClient(rt.github_token(), base_url=rt.spec.github_url)
        try:
            _check_head(client.pull_request(ref.owner, ref.repo, ref.number), ref)
            listing = client.list_files(ref.owner, ref.repo, ref.number)
        finally:
            client.close()
        if listing.truncated:
            log.warning("%s: GitHub lists at most 3,000 files; reviewing those", ref.id)
        return list(listing.files)
    raise ValueError(f"unknown PR source kind {kind!r}; expected 'github' or 'diff'")


# GitHub may answer for a PR a moment before a push shows in it: a head that differs is
# looked at again this many times (after the retry backoff) before the plan gives up.
HEAD_CHECKS = 2


class _HeadMoved(Exception):
    """The forge says the PR is not open at this head: a webhook can be replayed, and
    a PR can close or move on while its plan job waits. Nothing is spent on it."""

    def __init__(self, reason: str, *, final: bool) -> None:
        super().__init__(reason)
        self.reason, self.final = reason, final


def _check_head(info: PullRequestInfo, ref: PullRequestRef) -> None:
    """Before listing files (and so before any provider call): the PR as its forge
    reports it now must be open, ready for review, and at the head to be reviewed."""
    if info.state != "open":
        raise _HeadMoved(f"the pull request is {info.state} on GitHub", final=True)
    if info.draft:
        raise _HeadMoved("the pull request is a draft on GitHub", final=True)
    if info.head_sha.lower() != ref.head_sha:
        raise _HeadMoved(f"GitHub's head is {info.head_sha[:12]}", final=False)


def _head_moved(
    rt: Runtime, ref: PullRequestRef, source: dict[str, Any], attempt: int, exc: _HeadMoved
) -> str:
    """A closed or draft PR ends here; a head that differs is checked again a few
    times, in case GitHub had not caught up with a push yet."""
    if not exc.final and attempt < HEAD_CHECKS:
        return _retry_plan(rt, ref, source, attempt, exc)
    reason = f"not reviewed: {exc.reason}"
    ended = rt.admission.abandon_plan(ref.id, ref.head_sha, reason)
    log.info("%s@%s: %s", ref.id, ref.head_sha[:12], reason)
    return reason if ended else "stale: the PR moved on"


class _ClaimHeartbeat:
    """Keeps a running message's claim alive while its call runs; a worker killed
    mid-call stops renewing, and the waker runs the message again."""

    def __init__(self, rt: Runtime, member: str, dispatch: int) -> None:
        self.rt, self.member, self.dispatch = rt, member, dispatch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="claim-heartbeat", daemon=True)

    def __enter__(self) -> _ClaimHeartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        claim_ms = self.rt.spec.claim_ms
        while not self._stop.wait(claim_ms / 3000):
            try:
                self.rt.admission.heartbeat(self.member, self.dispatch, claim_ms)
            except Exception:  # a Redis hiccup; the next beat tries again
                log.warning("claim heartbeat failed for %s", self.member, exc_info=True)


def review_message(prefix: str, member: str, dispatch: int) -> str:
    """One run of one message (see module doc). Returns what happened, for RQ's record."""
    rt = _runtime(prefix)
    claimed = rt.admission.claim(member, dispatch, rt.spec.claim_ms)
    if claimed is None:
        return "stale: this run was superseded, cancelled or already done"
    message = PlannedMessage.model_validate_json(claimed.body)
    request = build_request(message, model=rt.spec.model, max_tokens=rt.spec.max_tokens)
    grants: list[Choice] = []
    state = claimed.state

    def on_grant(choice: Choice) -> None:
        grants.append(choice)
        rt.admission.note_started(member)

    started_ms = rt.admission.now_ms()
    try:
        with _ClaimHeartbeat(rt, member, dispatch):
            outcome = attempt(
                request,
                pr=claimed.pr,
                request_id=f"{member}.r{state.retries}",
                route=rt.route,
                now_ms=started_ms,
                retries=state.retries,
                policy=rt.spec.retry,
                on_grant=on_grant,
            )
    except Exception as exc:
        _park_error(rt, claimed, dispatch, exc)
        raise
    finally:
        released_ms = rt.admission.now_ms()
        for choice in grants:  # each grant's lease is released by now: wake the next
            rt.admission.signal(choice.entry.name, released_ms)
        _trace(rt, claimed, grants, released_ms)
    return _settle(rt, claimed, dispatch, message, outcome, grants, started_ms)


def _settle(
    rt: Runtime,
    claimed: Claimed,
    dispatch: int,
    message: PlannedMessage,
    outcome: Outcome,
    grants: list[Choice],
    started_ms: int,
) -> str:
    member = f"{claimed.pr}|{claimed.mid}"
    adm, now = rt.admission, rt.admission.now_ms()
    if isinstance(outcome, Served):
        reply = parse_reply(outcome.content, message)
        cost = _cost(rt, grants, outcome.account)
        adm.finish(
            member,
            dispatch,
            ok=True,
            reason=None,
            account=outcome.account,
            cost=cost,
            reply=reply.model_dump_json(),
        )
        return f"done on {outcome.account}"
    if isinstance(outcome, Wait):
        line = outcome.account if outcome.account_wide else None
        adm.park(
            member,
            dispatch,
            until_ms=outcome.until_ms,
            reason=outcome.reason,
            line=line,
            since_ms=started_ms,
        )
        return f"waiting for budget: {outcome.reason}"
    if isinstance(outcome, Retry):
        adm.park(
            member,
            dispatch,
            until_ms=now + outcome.after_ms,
            reason=outcome.reason,
            line=None,
            error_retry=True,
        )
        return f"retry {outcome.attempt_count} in {outcome.after_ms} ms: {outcome.reason}"
    if isinstance(outcome, Parked):
        reason = f"needs a person: {outcome.reason}"
        adm.park(member, dispatch, until_ms=now + rt.spec.park_recheck_ms, reason=reason, line=None)
        return reason
    assert isinstance(outcome, Failed)
    reason = outcome.reason + (
        " (the message is too long for the model)" if outcome.too_long else ""
    )
    adm.finish(
        member, dispatch, ok=False, reason=reason, account=outcome.account, cost={}, reply=None
    )
    return f"failed: {reason}"


def _cost(rt: Runtime, grants: list[Choice], account: str) -> dict[str, int]:
    for choice in grants:
        if choice.entry.name == account:
            return request_cost(choice.entry.account, rt.spec.model)
    return {}


def _park_error(rt: Runtime, claimed: Claimed, dispatch: int, exc: BaseException) -> None:
    """An unexpected error inside a run: an error retry, so a bug cannot loop forever."""
    member = f"{claimed.pr}|{claimed.mid}"
    retries = claimed.state.retries + 1
    try:
        if retries > rt.spec.retry.max_retries:
            reason = f"gave up after {retries - 1} retries: {type(exc).__name__}: {exc}"
            rt.admission.finish(
                member, dispatch, ok=False, reason=reason, account=None, cost={}, reply=None
            )
        else:
            until = rt.admission.now_ms() + rt.spec.retry.base_ms * retries
            rt.admission.park(
                member,
                dispatch,
                until_ms=until,
                reason=f"{type(exc).__name__}: {exc}",
                line=None,
                error_retry=True,
            )
    except Exception:  # Redis itself is down: the claim lapses and the waker reruns it
        log.warning("could not record the error of %s", member, exc_info=True)


def _trace(rt: Runtime, claimed: Claimed, grants: list[Choice], released_ms: int) -> None:
    """One line per grant and per release, for `simulate` (off unless the spec asks);
    a release notes how many messages stood in the account's line at that moment."""
    if not rt.spec.trace or not grants:
        return
    keys = rt.admission.keys
    for choice in grants:
        cost = request_cost(choice.entry.account, rt.spec.model)
        line = {
            "t_ms": choice.grant.now_ms,
            "pr": claimed.pr,
            "account": choice.entry.name,
            "request_id": choice.grant.request_id,
            "replayed": choice.grant.replayed,
            "cost": cost,
            "remaining": choice.grant.remaining,
        }
        waiting = cast(int, rt.redis.zcard(keys.line(choice.entry.name)))
        release = {
            "event": "release",
            "t_ms": released_ms,
            "account": choice.entry.name,
            "waiting": waiting,
        }
        for item in (line, release):
            rt.redis.rpush(keys.trace, json.dumps(item, separators=(",", ":")))


def finalize_pr(prefix: str, pr: str, gen: int, attempt: int = 0) -> str:
    """Gather one PR head's replies into one review and send it to the sink. Safe to
    run twice: the sinks are idempotent per PR and head SHA. `attempt` counts reruns
    after the sink could not deliver (see `_retry_finalize`)."""
    rt = _runtime(prefix)
    keys, redis = rt.admission.keys, rt.redis
    meta = rt.admission.read_meta(pr)
    if meta is None or meta.gen != gen:
        return "stale: the PR moved on"
    states = decode_messages(cast(dict[bytes, bytes], redis.hgetall(keys.msgs(pr))))
    current = {mid: s for mid, s in states.items() if s.gen == gen}
    bodies = cast(list[bytes | None], redis.hmget(keys.body(pr), list(current)) if current else [])
    replies_raw = cast(dict[bytes, bytes], redis.hgetall(keys.reply(pr)))
    messages = [PlannedMessage.model_validate_json(b) for b in bodies if b]
    plan = ReviewPlan.model_validate(
        {**meta.plan, "messages": sorted(messages, key=lambda m: m.index)}
    )
    replies: dict[int, Reply] = {}
    failed: dict[int, str] = {}
    for mid, state in current.items():
        n = int(mid.split(".", 1)[1])
        raw = replies_raw.get(mid.encode())
        if state.status == "done" and raw is not None:
            replies[n] = Reply.model_validate_json(raw)
        elif state.status in {"failed", "cancelled"}:
            failed[n] = state.reason or state.status
    ref = PullRequestRef.model_validate(meta.ref)
    review = gather(
        ref,
        plan,
        replies,
        failed,
        max_comments=rt.spec.max_comments,
        max_comment_chars=rt.spec.max_comment_chars,
    )
    try:
        result = rt.sink.post(review, ref)
    except (GitHubRateLimited, GitHubServerError, GitHubTransportError) as exc:
        return _retry_finalize(rt, pr, gen, attempt, exc)
    rt.admission.mark_finished(pr, gen)
    return "review posted" if result.posted else "review was already there"


def _retry_plan(
    rt: Runtime, ref: PullRequestRef, source: dict[str, Any], attempt: int, exc: Exception
) -> str:
    """GitHub could not list the files for now (a rate limit, a 5xx, no answer). Nothing
    was planned, so the waker queues the plan again when GitHub said to or after a
    backoff; raising would leave the PR `planning` until a person ran `retry-failed`.
    After `FINALIZE_RETRIES` reruns it raises: the job fails, for a person to see."""
    meta = rt.admission.read_meta(ref.id)
    if meta is None or meta.head_sha != ref.head_sha or meta.status != "planning":
        return "stale: the PR moved on"
    if attempt >= FINALIZE_RETRIES:
        raise exc
    wait_ms = _github_wait_ms(rt, attempt, exc)
    due = rt.admission.now_ms() + wait_ms
    schedule_plan(rt.admission, ref.model_dump_json(), source, attempt + 1, due)
    log.warning("%s: files not listed (%s); retry %d in %d ms", ref.id, exc, attempt + 1, wait_ms)
    return f"retry {attempt + 1} in {wait_ms} ms: {exc}"


def _github_wait_ms(rt: Runtime, attempt: int, exc: Exception) -> int:
    """GitHub's own retry time for a rate limit, else a jittered backoff."""
    if isinstance(exc, GitHubRateLimited):  # dated by the client's (this host's) clock
        return max(0, exc.retry_at_ms - time.time_ns() // 1_000_000)
    return jittered_backoff(attempt + 1, rt.spec.retry)


def _retry_finalize(rt: Runtime, pr: str, gen: int, attempt: int, exc: Exception) -> str:
    """Nothing, or only a marked review, was posted, so a rerun is safe: the waker
    queues one when GitHub said to (a rate limit) or after a backoff. RQ's own
    scheduler is not running, and a job never sleeps."""
    if attempt >= FINALIZE_RETRIES:
        rt.admission.mark_finished(pr, gen, error=f"review not posted: {exc}")
        return f"gave up after {attempt} retries: {exc}"
    wait_ms = _github_wait_ms(rt, attempt, exc)
    schedule_finalize(rt.admission, pr, gen, attempt + 1, rt.admission.now_ms() + wait_ms)
    log.warning("%s: review not posted (%s); retry %d in %d ms", pr, exc, attempt + 1, wait_ms)
    return f"retry {attempt + 1} in {wait_ms} ms: {exc}"


def _runtime(prefix: str) -> Runtime:
    rt = runtime()
    if rt.spec.prefix != prefix:
        raise RuntimeError(
            f"job for prefix {prefix!r} reached a worker configured for {rt.spec.prefix!r}"
        )
    return rt
