"""`reviewq worker`: RQ worker processes with the limiter, admission and waker wired in.

The supervision (the waker, replacing children, requeueing a dead child's job,
passing SIGTERM on) is `workers.supervisor`; this is the command line around it.
"""

from __future__ import annotations

import time

import click
import redis as redis_lib

from scheduler.config import Settings
from workers.providers.keycheck import check_keys
from workers.runtime import runtime_spec
from workers.supervisor import run_workers

__all__ = ["worker"]


@click.command("worker")
@click.option("--processes", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.pass_context
def worker(ctx: click.Context, processes: int, burst: bool) -> None:
    """Run review workers (and the waker) until SIGTERM or Ctrl-C."""
    settings: Settings = ctx.obj.settings
    if not settings.accounts:
        raise click.UsageError("no accounts configured: add [[accounts]] tables to the config")
    spec = runtime_spec(settings)
    redis_lib.Redis.from_url(spec.redis_url).ping()  # fail fast, with exit code 3
    keys = check_keys(settings, env=spec.environ, key_prefix=spec.limiter_prefix)
    for name, found in keys:
        kind = "a V3 credit key" if found.metering == "credits" else "a V2 prompt key"
        click.echo(
            f"warning: account {name!r}: its key is {kind} but its plan counts "
            f"{found.configured}; use plan = {found.suggested!r}",
            err=True,
        )
    click.echo(f"{processes} worker process(es) on queue {spec.queue_name!r}, model {spec.model}")
    started = time.monotonic()
    code = run_workers(spec, processes, burst)
    click.echo(f"workers stopped after {time.monotonic() - started:.0f} s")
    ctx.exit(code)
