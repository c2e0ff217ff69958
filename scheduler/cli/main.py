"""The `reviewq` command: a thin door over the package's functions."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click
import redis.exceptions
from rich.console import Console

from scheduler.cli.render import accounts_table, plan_json, plans_table, settings_json
from scheduler.config import ConfigError, Settings, find_config, load_settings, redact_url
from scheduler.quota.plans import PRESETS

__all__ = ["EXIT_CONFIG", "EXIT_FAILURE", "EXIT_REDIS", "App", "main", "pass_app"]

EXIT_FAILURE = 1
EXIT_CONFIG = 2  # also click's own code for usage errors
EXIT_REDIS = 3


@dataclass
class App:
    """What every command can reach through `pass_app`.

    Settings load on first use, so commands that need none (`reviewq plans`) still work
    while the config file is missing or broken.
    """

    config_path: Path | None = None
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings


pass_app = click.make_pass_decorator(App)


def _fail(ctx: click.Context, message: str, code: int) -> NoReturn:
    for line in message.splitlines():
        click.echo(f"error: {line}", err=True)
    ctx.exit(code)


class _Group(click.Group):
    """Turns the failures any command can meet into one message and a documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            _fail(ctx, str(exc), EXIT_CONFIG)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            _fail(ctx, _redis_unreachable(ctx, exc), EXIT_REDIS)


def _redis_unreachable(ctx: click.Context, exc: Exception) -> str:
    """Which server was tried (password redacted) and how to get one running."""
    settings = ctx.obj._settings if isinstance(ctx.obj, App) else None
    if settings is None:  # a command that never read the settings: no URL to name
        return f"Redis unreachable: {exc}"
    return (
        f"Redis unreachable at {redact_url(settings.redis_url)}: {exc}\n"
        "start one (`apt-get install redis-server`, then `redis-server`), or point "
        "REDIS_URL (or redis_url in the config file) at a server you run"
    )


@click.group(cls=_Group)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML settings file. Default: $REVIEWQ_CONFIG, else ./reviewq.toml if present.",
)
@click.version_option(package_name="reviewq")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """reviewq: keep LLM code review inside flat-rate provider quotas.

    \b
    Exit codes:
      0  success
      1  runtime failure
      2  usage or configuration error
      3  Redis unreachable
    """
    ctx.obj = App(config_path)


_JSON_HELP = "Print machine-readable JSON (numbers, not formatted strings)."


@main.command("plans")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
def plans_command(as_json: bool) -> None:
    """List the plan presets: windows, concurrency, model costs, source and date."""
    if as_json:
        click.echo(json.dumps({"presets": [plan_json(p) for p in PRESETS.values()]}, indent=2))
    else:
        console = Console()
        console.print(plans_table(PRESETS.values(), width=console.width))


@main.command("config")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@pass_app
def config_command(app: App, as_json: bool) -> None:
    """Show the settings reviewq would run with; API keys appear redacted."""
    settings = app.settings
    found = find_config(app.config_path)
    if as_json:
        data = {"config_file": found and str(found), **settings_json(settings, os.environ)}
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"config file: {found or 'none (defaults)'}")
    if not settings.accounts:
        click.echo("no accounts configured: add [[accounts]] tables (plan names: reviewq plans)")
        return
    Console().print(accounts_table(settings, os.environ))
    _warn_unset_keys(settings)


def _warn_unset_keys(settings: Settings) -> None:
    """`config` only shows; the worker is what refuses, so say so before it does."""
    for account in settings.accounts:
        if not os.environ.get(account.api_key_env, "").strip():
            click.echo(
                f"warning: account {account.name!r}: {account.api_key_env} is not set; "
                "`reviewq worker` will not start until it is",
                err=True,
            )


def _register() -> None:
    """Each command lives in its own module of this package; the group only collects them."""
    from scheduler.cli.accounts import accounts
    from scheduler.cli.bench import bench
    from scheduler.cli.demo import demo
    from scheduler.cli.enqueue import enqueue_command
    from scheduler.cli.estimate import estimate_command
    from scheduler.cli.inspect import inspect_command
    from scheduler.cli.pr import cancel_command, results_command, retry_failed_command
    from scheduler.cli.sandbox import sandbox
    from scheduler.cli.serve import serve
    from scheduler.cli.simulate import simulate, soak
    from scheduler.cli.worker import worker

    main.add_command(demo)
    main.add_command(accounts)
    main.add_command(bench)
    main.add_command(sandbox)
    main.add_command(simulate)
    main.add_command(soak)
    main.add_command(worker)
    main.add_command(estimate_command)
    main.add_command(inspect_command)
    main.add_command(enqueue_command)
    main.add_command(results_command)
    main.add_command(cancel_command)
    main.add_command(retry_failed_command)
    main.add_command(serve)


_register()
