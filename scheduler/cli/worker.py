"""`reviewq worker`: RQ worker processes with the limiter, admission and waker wired in.

The supervision (the waker, replacing children, requeueing a dead child's job,
passing SIGTERM on) is `workers.supervisor`; this is the command line around it.
"""

from __future__ import annotations

import time

import click

from scheduler.config import Settings, connect_redis
from workers.providers.keycheck import check_keys, close_missing_key_circuits, missing_keys
from workers.runtime import runtime_spec
from workers.supervisor import run_workers

__all__ = ["worker"]

EXIT_CONFIG = 2  # as `reviewq`'s own (scheduler.cli.main), which imports this module


@click.command("worker")
@click.option("--processes", type=click.IntRange(1, 256), default=1, show_default=True)
@click.option("--burst", is_flag=True, help="Exit once the queue is empty.")
@click.pass_context
def worker(ctx: click.Context, processes: int, burst: bool) -> None:
    """Run review workers (and the waker) until SIGTERM or Ctrl-C.

    Refuses to start while an account's API key variable is unset: a missing key is
    fixed by exporting it and starting again, never by waiting. Run `reviewq accounts
    test` first to check each key, base URL and model without spending quota.

    \b
    Exit codes:
      0  stopped by SIGTERM or Ctrl-C, or --burst found the queue empty
      2  configuration error, or an account's API key variable is unset
      3  Redis unreachable
    """
    settings: Settings = ctx.obj.settings
    if not settings.accounts:
        raise click.UsageError("no accounts configured: add [[accounts]] tables to the config")
    spec = runtime_spec(settings)
    unset = missing_keys(settings, spec.environ)
    if unset:
        for line in unset:
            click.echo(f"error: {line}", err=True)
        click.echo("error: not starting: every account needs its key", err=True)
        ctx.exit(EXIT_CONFIG)
    client = connect_redis(spec.redis_url)
    client.ping()  # fail fast, with exit code 3
    for name in close_missing_key_circuits(settings, client, key_prefix=spec.limiter_prefix):
        click.echo(f"account {name!r}: its key is set now; closed its missing-key circuit")
    client.close()
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
