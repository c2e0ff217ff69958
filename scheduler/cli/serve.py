"""`reviewq serve`: the webhook server, one uvicorn process or `--workers N` of them.

It refuses to start without a webhook secret, since an open endpoint would let anyone
queue reviews that spend the subscription; `--insecure-dev` is the explicit,
loud opt-out for trying it locally. Redis is pinged first, so a wrong REDIS_URL fails
at once with exit code 3 instead of as 503s later. SIGTERM and Ctrl-C stop it
gracefully: uvicorn stops accepting, lets requests in flight finish, then exits.

With `--workers N` the parent binds the port once and forks N uvicorn processes, each
listening on a socket of its own on that port (SO_REUSEPORT, so the kernel spreads
connections over them; one shared socket where the platform has no SO_REUSEPORT),
each with its own Redis connection, made after the fork. It passes SIGTERM and
Ctrl-C on to them and exits when they all have.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import traceback
from types import FrameType

import click
import uvicorn

from scheduler.config import ConfigError, Settings, redact_url
from scheduler.webhook import create_app, redis_client

__all__ = ["serve"]

_GRACE_S = 10  # for requests in flight at shutdown; each takes milliseconds
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
    if workers == 1:
        app = create_app(settings, client, insecure_dev=insecure_dev)
        server = uvicorn.Server(_config(app, host, port, access_log))
        _freeze()
        try:
            _run(server)
        finally:
            client.close()
        ctx.exit(0 if server.started else 1)
    client.close()
    ctx.exit(_fork_workers(settings, host, port, access_log, insecure_dev, workers))


def _config(app: object, host: str, port: int, access_log: bool) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        lifespan="off",
        log_level="info",
        access_log=access_log,
        timeout_graceful_shutdown=_GRACE_S,
    )


def _freeze() -> None:
    """Everything loaded so far lives as long as the process: out of the collector's
    sight, a full collection no longer walks it (~25 ms, a pause every delivery in
    flight would wait for)."""
    gc.collect()
    gc.freeze()


# Linux and the BSDs: each server listens on a socket of its own and the kernel spreads
# new connections over them. On one shared socket the process that wakes first accepts
# every connection waiting, so a client holding a few keep-alive connections (a proxy,
# the load generator) lands them all on one process while the others idle: `bench
# webhook --workers 2` swung between 480 and 1,230 deliveries/s on that alone.
_REUSEPORT = hasattr(socket, "SO_REUSEPORT")


def _bind(host: str, port: int, access_log: bool) -> socket.socket:
    """uvicorn's bound socket, plus SO_REUSEPORT where there is one. The parent's
    socket is bound but never listens, so it reserves the port and gets no
    connections: only listening sockets share them."""
    if not _REUSEPORT:
        return _config(None, host, port, access_log).bind_socket()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def _fork_workers(
    settings: Settings, host: str, port: int, access_log: bool, insecure: bool, count: int
) -> int:
    """Bind once, fork `count` servers on the port, relay stop signals, reap them."""
    sock = _bind(host, port, access_log)
    port = sock.getsockname()[1]  # --port 0 picks one, which every child shares
    pids = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:  # the child: its own Redis connection and app, after the fork
            code = 1
            try:
                own = _bind(host, port, access_log) if _REUSEPORT else sock
                app = create_app(settings, redis_client(settings.redis_url), insecure_dev=insecure)
                server = uvicorn.Server(_config(app, host, port, access_log))
                _freeze()
                _run(server, sockets=[own])
                code = 0 if server.started else 1
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        pids.append(pid)

    def _relay(signum: int, frame: FrameType | None) -> None:
        for child in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _relay)
    codes = [os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) for child in pids]
    sock.close()
    return 0 if all(code == 0 for code in codes) else 1


def _run(server: uvicorn.Server, sockets: list[socket.socket] | None = None) -> None:
    """uvicorn shuts down gracefully on SIGTERM or Ctrl-C, then raises the signal again
    against the handlers it found, to die by it. Ours note it instead, so a requested
    stop ends with exit code 0 rather than a kill status or click's "Aborted!"."""

    def _noted(signum: int, frame: FrameType | None) -> None:
        click.echo(f"stopped by {signal.Signals(signum).name}", err=True)

    previous = {sig: signal.signal(sig, _noted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=sockets)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
