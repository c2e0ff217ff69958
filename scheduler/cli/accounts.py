"""`reviewq accounts`: check each account before a PR arrives, and put one back in service.

`test` asks each provider, for free, whether the key, base URL and model are right
(`workers.providers.probe`). `circuit` shows which accounts are out of service and why;
`close-circuit` is the person's half of the circuit (`scheduler.quota.circuit`): an
account whose key was rejected stays out of service until someone fixes the cause and
closes it, and its parked messages are then tried again at their next recheck.
"""

from __future__ import annotations

import json

import click

from scheduler.cli.inspect_view import since
from scheduler.config import Settings, connect_redis
from scheduler.quota.circuit import Circuit, CircuitState
from scheduler.quota.limiter import LIMITER_PREFIX
from workers.providers.probe import AccountReport, probe_accounts
from workers.runtime import runtime_spec

__all__ = ["accounts"]

EXIT_FAILURE, EXIT_USAGE = 1, 2
_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


@click.group("accounts")
def accounts() -> None:
    """Test each account's key, base URL and model; see and close circuits."""


@accounts.command("test")
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: one object per account.")
@click.pass_context
def test_command(ctx: click.Context, names: tuple[str, ...], as_json: bool) -> None:
    """Check each account (or NAMES) with calls that cost no quota.

    Asks GET {base_url}/models and the provider's quota endpoint, never a completion.
    401 or 403 means the key; 404 on the model list means the base URL; a list
    without the review model means the model id. Redis is not needed.

    \b
    Exit codes:
      0  every account passed (warnings allowed)
      1  at least one account failed a check
      2  configuration error, or an unknown account name
    """
    settings: Settings = ctx.obj.settings
    if not settings.accounts:
        raise click.UsageError("no accounts configured: add [[accounts]] tables to the config")
    _known(settings, names)
    reports = probe_accounts(settings, names=names)
    if as_json:
        click.echo(json.dumps([_report_json(r) for r in reports], indent=2))
    else:
        for report in reports:
            _echo_report(report)
    failed = [r.account for r in reports if not r.ok]
    if failed:
        if not as_json:
            click.echo(f"{len(failed)} of {len(reports)} account(s) failed: {', '.join(failed)}")
        ctx.exit(EXIT_FAILURE)


def _echo_report(report: AccountReport) -> None:
    click.echo(f"{report.account}: {'ok' if report.ok else 'FAILED'}")
    for f in report.findings:
        click.echo(f"  {_MARK[f.status]} {f.check:<8} {f.detail}")


def _report_json(report: AccountReport) -> dict[str, object]:
    findings = [{"check": f.check, "status": f.status, "detail": f.detail} for f in report.findings]
    return {"account": report.account, "ok": report.ok, "findings": findings}


@accounts.command("circuit")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: one object per account.")
@click.pass_context
def circuit_command(ctx: click.Context, as_json: bool) -> None:
    """Show each account's circuit: in service, or out of service and why.

    \b
    Exit codes:
      0  shown
      2  configuration error
      3  Redis unreachable
    """
    settings: Settings = ctx.obj.settings
    client = connect_redis(settings.redis_url)
    circuit = Circuit(client, key_prefix=LIMITER_PREFIX)
    rows = [(a.name, circuit.state(a.name), circuit.ttl_ms_left(a.name)) for a in settings.accounts]
    client.close()
    if as_json:
        click.echo(json.dumps([_circuit_json(*row) for row in rows], indent=2))
        return
    if not rows:
        click.echo("no accounts configured")
    for name, state, left in rows:
        click.echo(_circuit_line(name, state, left))


def _circuit_line(name: str, state: CircuitState | None, left_ms: int | None) -> str:
    if state is None:
        return f"{name}: closed (in service)"
    closes = f"expires in {since(left_ms)}" if left_ms is not None else "only a person closes it"
    return (
        f"{name}: OPEN ({state.code}): {state.message}; {closes}; "
        f"fix the cause, then: reviewq accounts close-circuit {name}"
    )


def _circuit_json(name: str, state: CircuitState | None, left_ms: int | None) -> dict[str, object]:
    if state is None:
        return {"account": name, "open": False}
    return {
        "account": name,
        "open": True,
        "code": state.code,
        "message": state.message,
        "opened_at_ms": state.opened_at_ms,
        "expires_in_ms": left_ms,
    }


@accounts.command("close-circuit")
@click.argument("name")
@click.pass_context
def close_circuit_command(ctx: click.Context, name: str) -> None:
    """Put account NAME back in service once its cause is fixed.

    Its parked messages are tried again at their next recheck (within the park
    recheck interval, 5 minutes by default); the workers need no restart. If the
    cause is not fixed, the next refusal opens the circuit again.

    \b
    Exit codes:
      0  closed, or it was not open
      2  configuration error, or no account NAME
      3  Redis unreachable
    """
    settings: Settings = ctx.obj.settings
    _known(settings, (name,))
    client = connect_redis(settings.redis_url)
    circuit = Circuit(client, key_prefix=LIMITER_PREFIX)
    state = circuit.state(name)
    closed = circuit.close(name)
    client.close()
    if not closed or state is None:
        click.echo(f"{name}: the circuit was not open; nothing to do")
        return
    recheck = since(runtime_spec(settings).park_recheck_ms)
    click.echo(
        f"{name}: circuit closed (it was open for {state.code}: {state.message}); "
        f"parked messages are tried again within {recheck}"
    )


def _known(settings: Settings, names: tuple[str, ...]) -> None:
    configured = {a.name for a in settings.accounts}
    unknown = [n for n in names if n not in configured]
    if unknown:
        known = ", ".join(sorted(configured)) or "none configured"
        raise click.UsageError(f"unknown account {unknown[0]!r}; accounts: {known}")
