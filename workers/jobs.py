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

import logging
from typing import Any, cast

from scheduler.admission import Claimed, plan_deferral
from scheduler.state.records import decode_messages
from scheduler.state.refs import PullRequestRef
from workers.forge_retry import RETRYABLE, retry_finalize, retry_plan
from workers.grant_trace import write_grant_trace
from workers.heartbeat import Heartbeat
from workers.incremental import Selection, select
from workers.plan_source import HEAD_CHECKS, Fetched, HeadMoved, fetch
from workers.providers.attempt import Failed, Outcome, Parked, Retry, Served, Wait, attempt
from workers.providers.client import ChatRequest, ResponseFormat, output_bound, request_cost
from workers.providers.failover import Choice
from workers.review.gitattributes import parse_gitattributes
from workers.review.plan import PlannedMessage, ReviewPlan
from workers.review.planning import PullContext, build_request, estimate, plan_review
from workers.review.replies import UNREADABLE, Reply, gather, parse_reply
from workers.review_memory import code_at, new_only, remember
from workers.review_record import read_seen, record_plan, record_review
from workers.runtime import Runtime, runtime

__all__ = ["finalize_pr", "plan_pr", "review_message"]

log = logging.getLogger(__name__)


def plan_pr(prefix: str, ref_json: str, source: dict[str, Any], attempt: int = 0) -> str:
    """From a PR's files to messages. `source` is `{"kind": "github"}` or `{"kind":
    "gitlab", ...}` (list the files over the forge's API) or `{"kind": "diff", "text":
    ...}` (a local unified diff). `attempt` counts reruns after the forge could not list
    the files for now (see `retry_plan`).

    A plan job whose PR is no longer being planned at this head (closed, turned draft,
    cancelled, moved on or planned already while the job waited) ends here, before it
    asks the forge anything."""
    rt = _runtime(prefix)
    ref = PullRequestRef.model_validate_json(ref_json)
    meta = rt.admission.read_meta(ref.id)
    if meta is None or meta.head_sha != ref.head_sha or meta.status != "planning":
        return "stale: the PR is not being planned at this head"
    whole = not rt.spec.planning.incremental or bool(source.get("full"))
    seen = None if whole else read_seen(rt.redis, rt.admission.keys, ref.id)
    try:
        fetched = fetch(rt, ref, source, seen.heads() if seen else ())
    except RETRYABLE as exc:
        return retry_plan(rt, ref, source, attempt, exc)
    except HeadMoved as exc:
        return _head_moved(rt, ref, source, attempt, exc)
    files = fetched.files
    local = source.get("kind") == "diff"
    plan = _plan(rt, ref, fetched, select(files, seen, fetched.compared, local=local))
    bodies = [m.model_dump_json() for m in plan.messages]
    info = plan.model_dump(mode="json", exclude={"messages"})
    output = output_bound(rt.spec.max_tokens, rt.spec.thinking)
    cost = estimate(plan, rt.route.entries[0].account, rt.spec.model, output_tokens=output)
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


def _plan(rt: Runtime, ref: PullRequestRef, fetched: Fetched, chosen: Selection) -> ReviewPlan:
    """The plan of the files `chosen` for review, under the head's `.gitattributes`;
    the content of every file is kept until the review is posted (`review_record`)."""
    pull = PullContext(
        title=fetched.title,
        description=fetched.description,
        max_comments=rt.spec.max_comments,
        description_chars=rt.spec.description_chars,
    )
    attributes = parse_gitattributes(text) if (text := fetched.gitattributes) else None
    plan = plan_review(
        chosen.review,
        rt.spec.planning,
        repo=_repo(ref),
        model=rt.spec.model,
        pull=pull,
        attributes=attributes,
    )
    record_plan(rt.redis, rt.admission.keys, ref.id, ref.head_sha, chosen.content)
    return plan if chosen.scope is None else plan.model_copy(update={"scope": chosen.scope})


def _repo(ref: PullRequestRef) -> str | None:
    return f"{ref.owner}/{ref.repo}" if ref.owner and ref.repo else None


def _head_moved(
    rt: Runtime, ref: PullRequestRef, source: dict[str, Any], attempt: int, exc: HeadMoved
) -> str:
    """A closed or draft PR ends here; a head that differs is checked again a few
    times, in case GitHub had not caught up with a push yet."""
    if not exc.final and attempt < HEAD_CHECKS:
        return retry_plan(rt, ref, source, attempt, exc)
    reason = f"not reviewed: {exc.reason}"
    ended = rt.admission.abandon_plan(ref.id, ref.head_sha, reason)
    log.info("%s@%s: %s", ref.id, ref.head_sha[:12], reason)
    return reason if ended else "stale: the PR moved on"


def _claim_heartbeat(rt: Runtime, member: str, dispatch: int) -> Heartbeat:
    """Keeps a running message's claim alive while its call runs; a worker killed
    mid-call stops renewing, and the waker runs the message again. A claim found taken
    away is still beaten for: the run's own end settles whether it counts."""
    claim_ms = rt.spec.claim_ms

    def beat() -> bool:
        rt.admission.heartbeat(member, dispatch, claim_ms)
        return True

    return Heartbeat(beat, claim_ms / 3000, name="claim-heartbeat", subject=member)


def review_message(prefix: str, member: str, dispatch: int) -> str:
    """One run of one message (see module doc). Returns what happened, for RQ's record."""
    rt = _runtime(prefix)
    claimed = rt.admission.claim(member, dispatch, rt.spec.claim_ms)
    if claimed is None:
        return "stale: this run was superseded, cancelled or already done"
    if (deferred := _deferred(rt, claimed, dispatch)) is not None:
        return deferred
    message = PlannedMessage.model_validate_json(claimed.body)
    request = _request(rt, message, stricter=False)
    grants: list[Choice] = []
    released: dict[str, int] = {}  # lease id -> the limiter's time of its release
    state = claimed.state

    def on_grant(choice: Choice) -> None:
        grants.append(choice)
        rt.admission.note_started(member)

    def on_release(choice: Choice, at_ms: int) -> None:
        released[choice.grant.lease_id] = at_ms

    started_ms = rt.admission.now_ms()
    first: Served | None = None
    try:
        with _claim_heartbeat(rt, member, dispatch):
            rid = f"{member}.r{state.retries}"

            def call(req: ChatRequest, request_id: str) -> Outcome:
                return attempt(
                    req,
                    pr=claimed.pr,
                    request_id=request_id,
                    route=rt.route,
                    now_ms=rt.admission.now_ms() if first else started_ms,
                    retries=state.retries,
                    policy=rt.spec.retry,
                    on_grant=on_grant,
                    on_release=on_release,
                    estimate=claimed.meta.estimate,
                )

            outcome = call(request, rid)
            if isinstance(outcome, Served) and not _reply(outcome, message).usable:
                # Unreadable: once more with the stricter instruction, charged as a call
                # of its own (its own request id), never posted as it is.
                first = outcome
                outcome = call(_request(rt, message, stricter=True), f"{rid}.strict")
    except Exception as exc:
        _park_error(rt, claimed, dispatch, exc)
        raise
    finally:
        released_ms = rt.admission.now_ms()
        for choice in grants:  # each grant's lease is released by now: wake the next
            rt.admission.signal(choice.entry.name, released_ms)
        write_grant_trace(rt, claimed, grants, released, released_ms)
    return _settle(rt, claimed, dispatch, message, outcome, grants, started_ms, first)


def _reply(outcome: Served, message: PlannedMessage) -> Reply:
    """The answer read; one cut off at the length limit counts only for the complete
    comments it holds, since its partial text is not the review the model meant."""
    return parse_reply(outcome.content, message, cut=outcome.cut)


def _request(rt: Runtime, message: PlannedMessage, *, stricter: bool) -> ChatRequest:
    spec = rt.spec
    return build_request(
        message,
        model=spec.model,
        max_tokens=spec.max_tokens,
        thinking=spec.thinking,
        temperature=spec.temperature,
        response_format=ResponseFormat() if spec.response_format == "json_object" else None,
        stricter=stricter,
    )


def _settle(
    rt: Runtime,
    claimed: Claimed,
    dispatch: int,
    message: PlannedMessage,
    outcome: Outcome,
    grants: list[Choice],
    started_ms: int,
    first: Served | None = None,
) -> str:
    """Record how the run ended. `first` is an unreadable answer that was retried with
    the stricter instruction: both calls' costs are recorded, once each; a second
    unreadable answer fails the message, and neither answer's text is kept."""
    member = f"{claimed.pr}|{claimed.mid}"
    adm, now = rt.admission, rt.admission.now_ms()
    if isinstance(outcome, Served):
        reply = _reply(outcome, message)
        cost = outcome.cost or _cost(rt, grants, outcome.account)
        if first is not None:
            earlier = first.cost or _cost(rt, grants, first.account)
            cost = {w: cost.get(w, 0) + earlier.get(w, 0) for w in {*cost, *earlier}}
        ok = reply.usable
        adm.finish(
            member,
            dispatch,
            ok=ok,
            reason=None if ok else UNREADABLE,
            account=outcome.account,
            cost=cost,
            reply=reply.model_dump_json() if ok else None,
        )
        return f"done on {outcome.account}" if ok else f"failed: {UNREADABLE}"
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


def _deferred(rt: Runtime, claimed: Claimed, dispatch: int) -> str | None:
    """Park the message until off-peak if its PR is deferrable now (see
    `scheduler.admission.offpeak`); else end any deferral the PR had."""
    member, now = f"{claimed.pr}|{claimed.mid}", rt.admission.now_ms()
    main = rt.route.entries[0].account
    deferral = plan_deferral(claimed.meta, main, rt.calendar(), now)
    if deferral is None:
        if claimed.meta.deferred_since_ms is not None:
            rt.admission.end_deferral(claimed.pr)
        return None
    rt.admission.defer(member, dispatch, deferral)
    return deferral.reason


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


def finalize_pr(prefix: str, pr: str, gen: int, attempt: int = 0) -> str:
    """Gather one PR head's replies into one review and send it to the sink. Safe to
    run twice: the sinks are idempotent per PR and head SHA. `attempt` counts reruns
    after the sink could not deliver (see `retry_finalize`)."""
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
    if plan.scope is not None:
        review = review.model_copy(update={"scope": plan.scope})
    code = code_at(plan)
    review, _repeats = new_only(redis, keys, review, code)
    try:
        result = rt.sink.post(review, ref)
    except RETRYABLE as exc:
        return retry_finalize(rt, pr, gen, attempt, exc)
    remember(redis, keys, review, code, result.location, rt.spec.retention.review_s)
    record_review(rt.redis, rt.admission.keys, review, plan, replies, result.location)
    rt.admission.mark_finished(pr, gen)
    return "review posted" if result.posted else "review was already there"


def _runtime(prefix: str) -> Runtime:
    rt = runtime()
    if rt.spec.prefix != prefix:
        raise RuntimeError(
            f"job for prefix {prefix!r} reached a worker configured for {rt.spec.prefix!r}"
        )
    return rt
