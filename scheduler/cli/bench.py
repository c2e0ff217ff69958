"""`reviewq bench`: the commands and the printing of `scheduler.bench`'s measurements.

The library measures and returns figures, bars and verdicts; this module parses the
options, finds a Redis server, and prints what came back as tables, text or JSON.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from scheduler.bench import limiter as limiter_bench
from scheduler.bench import report as report_bench
from scheduler.bench import webhook as webhook_bench
from scheduler.bench.load import CLIENTS, Client
from scheduler.sandbox.localredis import RedisServerNotFound, RedisServerStartError

__all__ = ["bench"]

_SECONDS = "Timed seconds of each turn, after 0.3 s of warm-up per contender [0.25]."
_ROUNDS = "Turns each contender takes, in rotating order, at each client count [12]."
_CLIENTS = "Client process counts to run, comma-separated [1,4]."


@click.group()
def bench() -> None:
    """Measure reviewq on this machine."""


def _parse_clients(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        counts = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected counts such as 1,4, got {value!r}") from None
    if not counts or min(counts) < 1:
        raise click.BadParameter(f"expected positive counts such as 1,4, got {value!r}")
    return sorted(set(counts))


@bench.command("limiter")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.option("--seconds", type=click.FloatRange(0, min_open=True), default=0.25, help=_SECONDS)
@click.option("--clients", default="1,4", callback=_parse_clients, help=_CLIENTS)
@click.option("--rounds", type=click.IntRange(1, 200), default=12, help=_ROUNDS)
def limiter_command(as_json: bool, seconds: float, clients: list[int], rounds: int) -> None:
    """Acquire latency and throughput against EVALSHA and peer limiter libraries."""
    err = Console(stderr=True)
    _, skipped = limiter_bench.available()
    for name, why in skipped.items():
        err.print(f"skipping {name}: {why}")
    try:
        with limiter_bench.redis_server() as url:
            report = limiter_bench.run_limiter_bench(url, seconds, clients, rounds=rounds)
    except (RedisServerNotFound, RedisServerStartError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report.to_json()))
    else:
        _print_limiter(report, url, Console(file=sys.stdout))


def _table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> Table:
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="right" if 0 < i < 5 else "left")
    for row in rows:
        table.add_row(*row)
    return table


def _print_limiter(report: limiter_bench.BenchReport, url: str, console: Console) -> None:
    title = f"reviewq bench limiter ({url}, {os.cpu_count()} CPUs)"
    columns = ("contender", "clients", "ops/s", "p50 µs", "p99 µs")
    figures = (
        (r.name, str(r.clients), f"{r.ops_per_s:,.0f}", f"{r.p50_us:.1f}", f"{r.p99_us:.1f}")
        for r in report.results
    )
    console.print(_table(title, columns, figures))
    title = "Redis memory of one account after 500 requests in a 5 h window"
    sizes = ((name, f"{size:,}") for name, size in report.memory_bytes.items())
    console.print(_table(title, ("contender", "bytes"), sizes))
    verdict = {None: "n/a", True: "[green]PASS", False: "[red]MISS"}
    bars = (
        (label, "n/a" if ratio is None else f"{ratio:.2f}", bar, verdict[ok])
        for label, ratio, bar, ok in report.bars
    )
    console.print(_table("Bars", ("ratio", "value", "bar", "verdict"), bars))


@bench.command("webhook")
@click.option(
    "--deliveries",
    "count",
    type=click.IntRange(1, 1_000_000),
    default=5000,
    show_default=True,
    help="Timed deliveries.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 512),
    default=8,
    show_default=True,
    help="Connections sending at once.",
)
@click.option(
    "--warmup",
    type=click.IntRange(0, 100_000),
    default=500,
    show_default=True,
    help="Deliveries sent first, not timed.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="`reviewq serve --workers`: server processes.",
)
@click.option(
    "--client",
    type=click.Choice(CLIENTS),
    default="raw",
    show_default=True,
    help="Load generator: the lean raw HTTP/1.1 client, or httpx.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def webhook_command(
    count: int, concurrency: int, warmup: int, workers: int, client: Client, as_json: bool
) -> None:
    """Signed deliveries per second and latency through a real `reviewq serve`."""
    try:
        with webhook_bench.redis_server() as url:
            result = webhook_bench.run_webhook_bench(
                url, count, concurrency, warmup, workers, client
            )
    except (RedisServerNotFound, RedisServerStartError, webhook_bench.ServeError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result.to_json()))
        return
    stack = result.server
    click.echo(
        f"{result.deliveries} deliveries ({result.payload_bytes:,} bytes each), "
        f"concurrency {result.concurrency}, {os.cpu_count()} CPUs, "
        f"uvicorn {stack['http']}/{stack['loop']}, {result.client} client"
    )
    click.echo(f"  {result.deliveries_per_s:,.0f} deliveries/s over {result.seconds:.2f} s")
    latency = f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, max {result.max_ms:.1f} ms"
    click.echo(f"  latency {latency}")
    click.echo(f"  errors {result.errors}, enqueued {result.enqueued}")
    verdict = "PASS" if result.met else "MISS"
    bar = f">= {webhook_bench.BAR_RATE:.0f}/s and p99 < {webhook_bench.BAR_P99_MS:.0f} ms"
    click.echo(f"  bar: {bar}: {verdict}")


@bench.command("offpeak")
@click.argument(
    "scenario_path",
    metavar="[SCENARIO]",
    required=False,
    default="scenarios/zai-v3-offpeak.yaml",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option(
    "--runs",
    type=click.IntRange(1, 20),
    default=3,
    show_default=True,
    help="Pairs of runs, judged on their pooled figures (one run's p95 moves +-30 %).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def offpeak_command(scenario_path: Path, runs: int, as_json: bool) -> None:
    """Off-peak scheduling against its absence: SCENARIO (default
    scenarios/zai-v3-offpeak.yaml) run with and without the accounts' offpeak policies,
    RUNS times each, alternately; credits per reviewed message and small PRs' p95 wait
    over all the runs of a side, against issue 14's bars. Exits 1 if a bar is missed."""
    from scheduler.sim.compare import compare_offpeak
    from scheduler.sim.scenario import load_scenario

    try:
        scenario = load_scenario(scenario_path)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="SCENARIO") from None
    figures = compare_offpeak(scenario, redis_url=os.environ.get("REDIS_URL") or None, runs=runs)
    if as_json:
        click.echo(json.dumps(figures, indent=2))
    else:
        on, off = figures["with_offpeak"], figures["without_offpeak"]
        for name, run in (("with off-peak", on), ("without", off)):
            click.echo(
                f"{name}: {run['provider_credits']} credits for {run['messages_done']} messages "
                f"({run['credits_per_message']} per message), small-PR wait p95 "
                f"{run['small_pr_wait_p95_s']} s, {run['deferrals']} deferrals"
            )
        bars = figures["bars"]
        click.echo(
            f"saving {figures['credits_per_message_saving']} (bar >= {bars['saving_at_least']}): "
            f"{'met' if bars['saving_met'] else 'MISSED'}; small-PR p95 ratio "
            f"{figures['small_pr_wait_p95_ratio']} (bar <= {1 + bars['small_wait_p95_within']:g}): "
            f"{'met' if bars['small_wait_met'] else 'MISSED'}"
        )
        click.echo(f"  each pair's own p95 ratio: {figures['small_pr_wait_p95_ratio_by_run']}")
    if not (figures["bars"]["saving_met"] and figures["bars"]["small_wait_met"]):
        sys.exit(1)


@bench.command("report")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("docs/benchmarks.md"),
    show_default=True,
)
@click.option(
    "--only",
    multiple=True,
    type=click.Choice(report_bench.SECTION_NAMES),
    help="Run only these sections (repeatable); default: all, about 20 minutes.",
)
def report_command(out: Path, only: tuple[str, ...]) -> None:
    """Run every published measurement and write them, with their commands and this
    machine's description, to docs/benchmarks.md. Run it from the repository root.
    With --only, an existing page keeps its other sections: those run replace theirs
    (each section says when it ran)."""
    env = report_bench.report_env()
    fresh: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        sections = report_bench.sections(Path(tmp) / "chaos.xml")
        for section in (sections[name] for name in (only or sections)):
            click.echo(f"running: {section.shown}", err=True)
            run = report_bench.run_section(section, env)
            if run.code not in (0, 1):
                sys.stderr.write(run.stderr[-4000:])
            fresh.append(report_bench.section_lines(section, run))
    out.parent.mkdir(parents=True, exist_ok=True)
    if only and out.exists():
        out.write_text(report_bench.merge_sections(out.read_text(), fresh))
    else:
        lines = report_bench.page_head() + [line for block in fresh for line in block]
        out.write_text("\n".join(lines) + "\n")
    click.echo(f"wrote {out}", err=True)
