"""A forge that cannot answer for now: the plan or the review is queued again later.

GitHub and GitLab rate limits, 5xx and timeouts pass. Raising would leave the PR stuck (`planning`
until a person ran `retry-failed`), and a job never sleeps, so the job ends and the
waker queues a fresh one when GitHub said to, or after a jittered backoff (RQ's own
scheduler is not running). Both reruns are safe: a plan that found nothing did
nothing, and the sinks post at most one review per PR head.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from scheduler.state.refs import PullRequestRef
from scheduler.waker import schedule_finalize, schedule_plan
from workers.forge.github import GitHubRateLimited, GitHubServerError, GitHubTransportError
from workers.forge.github_errors import unadvised_wait_ms
from workers.forge.gitlab_errors import GitLabRateLimited, GitLabServerError, GitLabTransportError
from workers.providers.attempt import jittered_backoff
from workers.runtime import Runtime

__all__ = ["FINALIZE_RETRIES", "RETRYABLE", "retry_finalize", "retry_plan"]

log = logging.getLogger(__name__)

# A sink that cannot deliver for now (a rate limit, a 5xx, no answer) is tried again
# this many times, each after GitHub's retry time or a backoff, before the PR is
# marked done with the error. Listing a plan's files is tried as often.
FINALIZE_RETRIES = 8

# What a forge answers when it cannot answer for now: the plan or the post is rerun.
# A 401/403/404 is not among them: retrying cannot help, the job fails for a person.
RETRYABLE: tuple[type[Exception], ...] = (
    GitHubRateLimited,
    GitHubServerError,
    GitHubTransportError,
    GitLabRateLimited,
    GitLabServerError,
    GitLabTransportError,
)


def retry_plan(
    rt: Runtime, ref: PullRequestRef, source: dict[str, Any], attempt: int, exc: Exception
) -> str:
    """GitHub could not list the files for now, or had not caught up with a push yet.
    Nothing was planned, so the plan is queued again; after `FINALIZE_RETRIES` reruns
    this raises: the job fails, for a person to see."""
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


def retry_finalize(rt: Runtime, pr: str, gen: int, attempt: int, exc: Exception) -> str:
    """Nothing, or only a marked review, was posted, so a rerun is safe; after
    `FINALIZE_RETRIES` reruns the PR is marked done with the error."""
    if attempt >= FINALIZE_RETRIES:
        rt.admission.mark_finished(pr, gen, error=f"review not posted: {exc}")
        return f"gave up after {attempt} retries: {exc}"
    wait_ms = _github_wait_ms(rt, attempt, exc)
    schedule_finalize(rt.admission, pr, gen, attempt + 1, rt.admission.now_ms() + wait_ms)
    log.warning("%s: review not posted (%s); retry %d in %d ms", pr, exc, attempt + 1, wait_ms)
    return f"retry {attempt + 1} in {wait_ms} ms: {exc}"


def _github_wait_ms(rt: Runtime, attempt: int, exc: Exception) -> int:
    """The forge's own retry time for a rate limit, else a jittered backoff. A GitHub
    limit that named no time waits longer at each rerun, as GitHub asks; the rerun's
    `attempt` (carried by the plan and finalize jobs) is the count, so no state is kept."""
    if isinstance(exc, GitHubRateLimited) and not exc.advised:
        return unadvised_wait_ms(attempt)
    if isinstance(exc, GitHubRateLimited | GitLabRateLimited):  # dated by this host's clock
        return max(0, exc.retry_at_ms - time.time_ns() // 1_000_000)
    return jittered_backoff(attempt + 1, rt.spec.retry)
