"""`reviewq sandbox`: local stand-ins for the providers and for GitHub.

They let the whole pipeline run on one machine against servers that behave like the
real ones, quotas and failures included, without spending a real subscription.
"""

from __future__ import annotations

import signal
from types import FrameType

import click

from scheduler.quota.plans import get_preset
from scheduler.sandbox import (
    BASE_PATHS,
    DEV_GITHUB_TOKEN,
    DEV_KEY,
    FakeGitHubConfig,
    Flavour,
    Latency,
    ProviderConfig,
    ServerHandle,
    create_github_app,
    create_provider_app,
    is_loopback,
    serve_in_thread,
)

__all__ = ["sandbox"]

_FLAVOURS: tuple[Flavour, ...] = ("synthetic", "zai", "openai")


@click.group("sandbox")
def sandbox() -> None:
    """Local simulators that behave like the real services, quotas and faults included."""


@sandbox.command("provider")
@click.option("--flavour", type=click.Choice(_FLAVOURS), required=True, help="API shape.")
@click.option("--plan", "plan_name", required=True, help="Plan preset (see `reviewq plans`).")
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Simulated seconds per real second.",
)
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="0: any free port.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--packs", type=click.IntRange(1, 100), default=1, show_default=True)
@click.option("--seed", type=int, default=None, help="Replay latencies and faults exactly.")
@click.option(
    "--latency-median",
    type=click.FloatRange(min=0, min_open=True),
    default=20.0,
    show_default=True,
    help="Simulated seconds.",
)
@click.option(
    "--latency-p95",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Simulated seconds.",
)
def provider_command(
    flavour: Flavour,
    plan_name: str,
    time_scale: float,
    port: int,
    host: str,
    packs: int,
    seed: int | None,
    latency_median: float,
    latency_p95: float,
) -> None:
    """Serve an OpenAI-compatible API that enforces the plan's quota by itself.

    Faults, a smaller quota and the fair-use switch are set at runtime with
    POST /_sim/config; counters are at GET /_sim/stats.
    """
    try:
        plan = get_preset(plan_name)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="--plan") from None
    if latency_p95 < latency_median:
        raise click.BadParameter("must be at least --latency-median", param_hint="--latency-p95")
    config = ProviderConfig(
        flavour=flavour,
        plan=plan,
        packs=packs,
        time_scale=time_scale,
        seed=seed,
        latency=Latency(median_s=latency_median, p95_s=latency_p95),
    )
    if not is_loopback(host):
        click.echo(f"warning: {host} is not loopback; the dev key is public", err=True)
    handle = serve_in_thread(create_provider_app(config), port, host, log_level="info")
    click.echo(f"{flavour} provider simulator, plan {plan.name}, time x{time_scale:g}")
    click.echo(f"base_url: {handle.url}{BASE_PATHS[flavour]}")
    click.echo(f"api key:  {DEV_KEY}  (a fixed development key, not a secret)")
    click.echo(f"stats:    {handle.url}/_sim/stats")

    _run_until_stopped(handle)


@sandbox.command("github")
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="0: any free port.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--token",
    default=DEV_GITHUB_TOKEN,
    help="The token API calls must carry.  [default: a fixed development token]",
)
def github_command(port: int, host: str, token: str) -> None:
    """Serve a fake GitHub REST API (PRs, files, reviews) that keeps PRs in memory.

    Create PRs with POST /_gh/prs, inject rate limits and 502s with POST /_gh/faults,
    read posted reviews at GET /_gh/reviews; /_gh/* answers only over loopback.
    """
    if not token.strip() or any(c.isspace() for c in token):
        raise click.BadParameter("must be non-empty, without whitespace", param_hint="--token")
    if not is_loopback(host):
        click.echo(f"warning: {host} is not loopback; the API is reachable by others", err=True)
    app = create_github_app(FakeGitHubConfig(token=token))
    handle = serve_in_thread(app, port, host, log_level="info")
    click.echo("fake GitHub REST API")
    click.echo(f"base_url: {handle.url}")
    if token == DEV_GITHUB_TOKEN:
        click.echo(f"token:    {token}  (a fixed development token, not a secret)")
    else:
        click.echo("token:    the one given with --token")
    click.echo(f"control:  {handle.url}/_gh/prs, /_gh/faults, /_gh/reviews, /_gh/stats")

    _run_until_stopped(handle)


def _run_until_stopped(handle: ServerHandle) -> None:
    """Serve until Ctrl-C or SIGTERM; either way uvicorn shuts down gracefully."""

    def _stop(signum: int, frame: FrameType | None) -> None:
        handle.server.should_exit = True

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        while not handle.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        handle.stop()
