"""`reviewq results`, `cancel` and `retry-failed`: one PR's outcome, and the two
hands an operator needs on work in flight."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, NoReturn, cast

import click

from scheduler.config import Settings
from scheduler.ops.deployment import Deployment, PrSyntaxError, connect, parse_pr
from scheduler.ops.requeue import failed_jobs, job_json, requeue_jobs, retry_messages
from scheduler.state.records import PrView, read_pr
from workers.forge.sinks import LogSink
from workers.review.model import Review

__all__ = ["cancel_command", "results_command", "retry_failed_command"]

EXIT_FAILURE = 1
_JSON = "Print JSON."


def _pr_id(ctx: click.Context, text: str, hint: str = "'PR'") -> str:
    try:
        return parse_pr(text, gitlab_url=ctx.obj.settings.review.gitlab_url).id
    except PrSyntaxError as exc:
        raise click.BadParameter(str(exc), ctx, param_hint=hint) from None


def _fail(message: str) -> NoReturn:
    for line in message.splitlines():
        click.echo(f"error: {line}", err=True)
    raise click.exceptions.Exit(EXIT_FAILURE)


def _unknown(pr: str, settings: Settings) -> str:
    return (
        f"unknown PR {pr!r}: queue {settings.queue_name!r} holds no state for it (never "
        "enqueued here, or expired a week after its last change)"
    )


def _state_json(view: PrView | None) -> dict[str, Any] | None:
    if view is None:
        return None
    meta = view.meta
    return {
        "status": meta.status,
        "head_sha": meta.head_sha,
        "gen": meta.gen,
        "total": meta.total,
        "messages": view.counts(),
        "error": meta.error,
    }


def _state_line(view: PrView) -> str:
    meta, counts = view.meta, view.counts()
    done = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no messages"
    line = f"{meta.pr} at {meta.head_sha[:12]}: {meta.status} ({done} of {meta.total})"
    return line + (f"; error: {meta.error}" if meta.error else "")


def _stored(dep: Deployment, pr: str) -> tuple[str | None, list[str]]:
    """The latest reviewed head and every head with a review, from LogSink's hash."""
    key = f"{dep.prefix}:reviewlog:{pr}"  # LogSink's layout (see workers/sinks.py)
    fields = [f.decode() for f in cast(list[bytes], dep.redis.hkeys(key))]
    latest = cast(bytes | None, dep.redis.hget(key, "latest"))
    shas = sorted(f.removeprefix("sha:") for f in fields if f.startswith("sha:"))
    return (latest.decode() if latest else None), shas


def _print_review(review: Review, latest: str | None, shas: list[str]) -> None:
    others = [s[:12] for s in shas if s != review.head_sha]
    tag = " (latest)" if review.head_sha == latest else ""
    counts = f"{review.messages_done} messages done, {review.messages_failed} failed"
    click.echo(
        f"\nreview of {review.head_sha[:12]}{tag}: {counts}" + (", stale" if review.stale else "")
    )
    if others:
        click.echo(f"also stored: {', '.join(others)} (reviewq results PR --sha SHA)")
    click.echo("\n" + review.summary.strip())
    for c in review.comments:
        click.echo(f"\n{c.path}:{c.line}\n{c.body.strip()}")


@click.command("results")
@click.argument("pr_text", metavar="PR")
@click.option("--sha", help="The review of this head commit. Default: the latest stored.")
@click.option("--json", "as_json", is_flag=True, help=_JSON)
@click.pass_context
def results_command(ctx: click.Context, pr_text: str, sha: str | None, as_json: bool) -> None:
    """Show a PR's stored review (the log sink keeps one per head commit) and its state.

    \b
    Exit codes:
      0  shown
      1  no review stored for this PR (or this head), or the PR is unknown
      2  bad PR syntax or configuration
      3  Redis unreachable
    """
    settings: Settings = ctx.obj.settings
    pr = _pr_id(ctx, pr_text)
    dep = connect(settings)
    try:
        view = read_pr(dep.redis, dep.keys, pr)
        latest, shas = _stored(dep, pr)
        review = LogSink.get(dep.redis, pr, prefix=dep.prefix, head_sha=sha)
    finally:
        dep.close()
    if review is None:
        if view is None and not shas:
            _fail(_unknown(pr, settings))
        what = f"at {sha[:12]}" if sha else "yet"
        lines = [f"no review stored for {pr} {what}"]
        if view is not None:
            lines.append(_state_line(view))
        if settings.review.sink != "log":
            sink = settings.review.sink
            lines.append(
                f"this deployment posts reviews on the PR's forge (sink = {sink}): see the PR"
            )
        _fail("\n".join(lines))
    if as_json:
        data = {
            "pr": pr,
            "state": _state_json(view),
            "latest_sha": latest,
            "shas": shas,
            "review": review.model_dump(mode="json"),
        }
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(_state_line(view) if view else f"{pr}: no state left (reviews outlive it)")
    _print_review(review, latest, shas)


@click.command("cancel")
@click.argument("pr_text", metavar="PR")
@click.option("--reason", default="cancelled by an operator", show_default=True)
@click.option("--json", "as_json", is_flag=True, help=_JSON)
@click.pass_context
def cancel_command(ctx: click.Context, pr_text: str, reason: str, as_json: bool) -> None:
    """Cancel a PR's work that has not started. Running messages finish (their
    budget is spent already); once they end, the review of what was done is sent.
    A plan job still queued for the PR plans nothing.

    \b
    Exit codes:
      0  cancelled (or nothing left to cancel)
      1  unknown PR
      2  bad PR syntax or configuration
      3  Redis unreachable
    """
    settings: Settings = ctx.obj.settings
    pr = _pr_id(ctx, pr_text)
    dep = connect(settings)
    try:
        if read_pr(dep.redis, dep.keys, pr) is None:
            _fail(_unknown(pr, settings))
        cancelled = dep.admission.cancel(pr, reason)
        after = read_pr(dep.redis, dep.keys, pr)
    finally:
        dep.close()
    assert after is not None
    running = sum(1 for s in after.messages.values() if s.status == "running")
    if as_json:
        data = {"pr": pr, "cancelled": cancelled, "running": running, "status": after.meta.status}
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"cancelled {cancelled} message(s) of {pr}; status now {after.meta.status}")
    if running:
        click.echo(f"{running} running message(s) will finish; then the review is sent")


@click.command("retry-failed")
@click.option("--pr", "pr_text", help="Only this PR's failed jobs and messages.")
@click.option("--json", "as_json", is_flag=True, help=_JSON)
@click.pass_context
def retry_failed_command(ctx: click.Context, pr_text: str | None, as_json: bool) -> None:
    """Requeue RQ's failed jobs that still have work to do, and re-arm failed
    messages of PRs still in review. Stale jobs (their work was redone, ended or
    superseded) are left in RQ's failed registry. A re-armed message gets a new
    request id: its next call is charged once, as a new call; the failed call's
    charge stays, as the provider counted it too.

    \b
    Exit codes:
      0  done (also when nothing had failed)
      1  --pr names an unknown PR
      2  bad PR syntax or configuration
      3  Redis unreachable
    """
    settings: Settings = ctx.obj.settings
    pr = _pr_id(ctx, pr_text, "'--pr'") if pr_text is not None else None
    dep = connect(settings)
    try:
        jobs = failed_jobs(dep, pr)
        if pr is not None and not jobs and dep.admission.read_meta(pr) is None:
            _fail(_unknown(pr, settings))
        requeued = set(requeue_jobs(dep, jobs))
        messages = retry_messages(dep, pr)
    finally:
        dep.close()
    if as_json:
        data = {
            "jobs": [{**job_json(j), "requeued": j.job_id in requeued} for j in jobs],
            "requeued_jobs": len(requeued),
            "messages": [asdict(m) for m in messages],
            "rearmed_messages": sum(m.rearmed for m in messages),
        }
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"RQ failed jobs: {len(requeued)} requeued, {len(jobs) - len(requeued)} left")
    for j in jobs:
        what = "requeued" if j.job_id in requeued else f"left: {j.note}"
        click.echo(f"  {j.job_id} ({j.kind} {j.pr or '-'}): {what}; failed with: {j.error}")
    rearmed = sum(m.rearmed for m in messages)
    click.echo(
        f"failed messages: {rearmed} re-armed in {sum(1 for m in messages if m.rearmed)} PR(s)"
    )
    for m in messages:
        what = f"{m.rearmed} re-armed" if m.rearmed else f"left: {m.note}"
        click.echo(f"  {m.pr} ({m.status}, {m.failed} failed): {what}")
