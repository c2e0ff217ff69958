"""`reviewq inspect`: what the deployment is doing, read without changing anything."""

from __future__ import annotations

import json
import time

import click
import redis as redis_lib
from rich.console import Console
from rich.live import Live

from scheduler.cli.inspect_view import render_snapshot
from scheduler.config import Settings, connect_redis
from scheduler.ops.deployment import PrSyntaxError, parse_pr
from scheduler.ops.inspection import snapshot
from scheduler.ops.snapshots import Snapshot

__all__ = ["inspect_command"]

EXIT_FAILURE, EXIT_USAGE = 1, 2


def _pr_id(ctx: click.Context, text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return parse_pr(text, gitlab_url=ctx.obj.settings.review.gitlab_url).id
    except PrSyntaxError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param_hint="'--pr'") from None


def _take(client: redis_lib.Redis, settings: Settings, limit: int, pr: str | None) -> Snapshot:
    snap = snapshot(client, settings, limit=limit, pr=pr)
    if pr is not None and not snap.prs:
        click.echo(
            f"error: unknown PR {pr!r}: Redis holds no state for it in queue "
            f"{settings.queue_name!r} (never enqueued here, or expired a week after its "
            "last change)",
            err=True,
        )
        raise click.exceptions.Exit(EXIT_FAILURE)
    return snap


@click.command("inspect")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: numbers, not strings.")
@click.option("--watch", is_flag=True, help="Redraw every --interval seconds until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(0.2, 3600),
    default=2.0,
    show_default=True,
    help="Seconds between redraws under --watch.",
)
@click.option("--pr", "pr_text", help="Only this PR, with each of its messages.")
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=20,
    show_default=True,
    help="How many PRs to show, most recent arrivals first.",
)
@click.option("--refreshes", type=click.IntRange(1), hidden=True, help="Stop --watch after N.")
@click.pass_context
def inspect_command(
    ctx: click.Context,
    as_json: bool,
    watch: bool,
    interval: float,
    pr_text: str | None,
    limit: int,
    refreshes: int | None,
) -> None:
    """Show queues, each account's windows, leases, blocks and circuits, and the PRs
    with their progress, cost and ETA. Reads Redis only: safe to run any time.

    \b
    Exit codes:
      0  shown
      1  --pr names a PR this deployment does not know
      2  bad option, PR syntax or configuration
      3  Redis unreachable
    """
    if as_json and watch:
        raise click.UsageError("--json and --watch do not mix: poll `inspect --json` instead")
    pr = _pr_id(ctx, pr_text)
    settings: Settings = ctx.obj.settings
    client = connect_redis(settings.redis_url)
    try:
        snap = _take(client, settings, limit, pr)
        if as_json:
            click.echo(json.dumps(snap.model_dump(mode="json"), indent=2))
        elif watch:
            _watch(client, settings, limit, pr, interval, refreshes, snap)
        else:
            Console().print(render_snapshot(snap))
    finally:
        client.close()


def _watch(
    client: redis_lib.Redis,
    settings: Settings,
    limit: int,
    pr: str | None,
    interval: float,
    refreshes: int | None,
    first: Snapshot,
) -> None:
    """Redraw in place until Ctrl-C (or `refreshes` frames, for tests)."""
    shown = 1
    try:
        with Live(render_snapshot(first), console=Console(), auto_refresh=False) as live:
            while refreshes is None or shown < refreshes:
                time.sleep(interval)
                live.update(render_snapshot(_take(client, settings, limit, pr)), refresh=True)
                shown += 1
    except KeyboardInterrupt:
        pass
