"""`reviewq serve`: the webhook server, one uvicorn process or `--workers N` of them.

It refuses to start without a webhook secret, since an open endpoint would let anyone
queue reviews that spend the subscription; `--insecure-dev` is the explicit,
loud opt-out for trying it locally. Redis is pinged first, so a wrong REDIS_URL fails
at once with exit code 3 instead of as 503s later. SIGTERM and Ctrl-C stop it
gracefully, with exit code 0. Running the servers (and forking N of them on one port)
is `scheduler.webhook.serving`; this is the command line around it.
"""

from __future__ import annotations

import os
import signal

import click

from scheduler.config import ConfigError, Settings, redact_url
from scheduler.webhook import create_app, redis_client
from scheduler.webhook.serving import Listener, ListenError, fork_servers, serve_in_process

__all__ = ["serve"]

_INSECURE = (
    "WARNING: --insecure-dev: deliveries without a secret are accepted UNSIGNED. Anyone "
    "who can reach this port can queue reviews that spend your quota. Local testing only."
)


def _secret_vars(settings: Settings) -> dict[str, str]:
    hook = settings.webhook
    return {"GitHub": hook.github_secret_env, "GitLab": hook.gitlab_token_env}


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port."
)
@click.option("--insecure-dev", is_flag=True, help="Accept unsigned deliveries (testing only).")
@click.option("--access-log", is_flag=True, help="Log every request (off: metrics count them).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Server processes sharing the port (one per core is a good start).",
)
@click.pass_context
def serve(
    ctx: click.Context, host: str, port: int, insecure_dev: bool, access_log: bool, workers: int
) -> None:
    """Receive GitHub and GitLab webhooks and queue the PRs they name.

    \b
    POST /webhooks/github  (secret: $GITHUB_WEBHOOK_SECRET, see [webhook])
    POST /webhooks/gitlab  (token:  $GITLAB_WEBHOOK_TOKEN)
    GET  /healthz, GET /metrics (Prometheus)

    \b
    Exit codes:
      0  stopped by SIGTERM or Ctrl-C
      1  the port could not be bound, or a server process failed
      2  no webhook secret or no [webhook] repositories, or another config error
      3  Redis unreachable
    """
    settings: Settings = ctx.obj.settings
    names = _secret_vars(settings)
    state = {forge: bool(os.environ.get(var, "").strip()) for forge, var in names.items()}
    if not any(state.values()) and not insecure_dev:
        raise ConfigError(
            f"no webhook secret set: export {names['GitHub']} (GitHub) and/or "
            f"{names['GitLab']} (GitLab), or pass --insecure-dev for local testing"
        )
    repos = settings.webhook.repositories
    if not repos and not insecure_dev:
        raise ConfigError(
            "[webhook] repositories is empty: list the repositories whose PRs may spend "
            'the budget, e.g. repositories = ["acme/api", "acme/*"] (["*"] accepts every '
            "repository the webhook is installed on)"
        )
    if insecure_dev:
        click.secho(_INSECURE, err=True, fg="red", bold=True)
    client = redis_client(settings.redis_url)
    client.ping()  # fail fast: the group maps a ConnectionError to exit code 3
    for forge, on in state.items():
        mode = "signed" if on else ("UNSIGNED" if insecure_dev else f"off ({names[forge]} unset)")
        click.echo(f"{forge}: {mode}")
    click.echo(f"repositories: {', '.join(repos) or 'any (--insecure-dev)'}")
    click.echo(f"queue {settings.queue_name!r} on Redis {redact_url(settings.redis_url)}")
    listener = Listener(host, port, access_log)
    if workers == 1:
        app = create_app(settings, client, insecure_dev=insecure_dev)
        try:
            code = serve_in_process(app, listener, on_stop=_noted)
        finally:
            client.close()
        ctx.exit(code)
    client.close()
    try:
        code = fork_servers(
            settings, listener, insecure=insecure_dev, count=workers, on_stop=_noted
        )
    except ListenError as exc:
        raise click.ClickException(str(exc)) from None
    ctx.exit(code)


def _noted(sig: signal.Signals) -> None:
    """A requested stop is said, not died of: exit code 0 rather than a kill status or
    click's "Aborted!"."""
    click.echo(f"stopped by {sig.name}", err=True)
