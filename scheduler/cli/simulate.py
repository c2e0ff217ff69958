"""`reviewq simulate SCENARIO`: capacity planning on the real pipeline, time compressed."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

__all__ = ["simulate"]


@click.command("simulate")
@click.argument(
    "scenario_path",
    metavar="SCENARIO",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object (fields: docs/capacity.md)."
)
@click.option(
    "--policy",
    type=click.Choice(["fair", "fifo"]),
    default=None,
    help="Override the scenario's policy; fifo is the baseline without fairness.",
)
@click.option(
    "--no-offpeak",
    "no_offpeak",
    is_flag=True,
    help="Drop the accounts' off-peak policies: the baseline off-peak scheduling is judged by.",
)
@click.option(
    "--trace",
    "trace_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write one JSON line per grant to this file.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a self-contained HTML page with charts of the run to this file.",
)
def simulate(
    scenario_path: Path,
    as_json: bool,
    policy: str | None,
    no_offpeak: bool,
    trace_path: Path | None,
    report_path: Path | None,
) -> None:
    """Run SCENARIO (YAML or JSON) against the provider simulator with real Redis, RQ
    workers, limiter and admission; time runs `time_scale` times faster.

    Uses $REDIS_URL if set, else starts a private local Redis.

    \b
    Exit codes:
      0  the run ended and its figures were printed
      1  the run failed (a part did not start)
      2  the scenario file is not valid (each mistake is named)
      3  REDIS_URL is set but that Redis does not answer
    """
    from scheduler.sim.scenario import load_scenario
    from scheduler.sim.simulate import run_scenario

    try:
        scenario = load_scenario(scenario_path)
    except ValidationError as exc:
        raise click.BadParameter(_mistakes(exc), param_hint="SCENARIO") from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="SCENARIO") from None
    if not as_json:
        real = scenario.duration / scenario.time_scale
        click.echo(
            f"simulating {scenario.duration / 3600:g} h at x{scenario.time_scale:g}: "
            f"at most {real:.0f} s of wall time",
            err=True,
        )
    result = run_scenario(
        scenario,
        policy=policy,
        redis_url=os.environ.get("REDIS_URL") or None,
        offpeak=not no_offpeak,
    )
    if report_path is not None:
        from scheduler.sim.html_report import render_html

        report_path.write_text(render_html(result, title=f"reviewq simulate {scenario_path.name}"))
    trace = result.pop("trace")
    if trace_path is not None:
        _write_trace(trace_path, trace, result)
    if as_json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print(result)


def _write_trace(path: Path, trace: list[dict[str, Any]], result: dict[str, Any]) -> None:
    """Grants only, with whether the PR was over its share (from the reserve replay)."""
    with path.open("w") as out:
        for event in trace:
            if event.get("event", "grant") != "grant":
                continue
            out.write(
                json.dumps(
                    {
                        "t_s": event["t_s"],
                        "pr": event["pr"],
                        "account": event["account"],
                        "request_id": event["request_id"],
                        "cost": {k: v / 1000 for k, v in event["cost"].items()},
                        "over_share": event.get("over_share", False),
                        "totals": event.get("totals", {}),
                    }
                )
                + "\n"
            )


def _print(result: dict[str, Any]) -> None:
    console = Console()
    table = Table(title=f"accounts ({result['scenario']['policy']})")
    for col in (
        "account",
        "requests",
        "429s",
        "window",
        "limit",
        "max used in any window",
        "utilization",
    ):
        table.add_column(col)
    for account in result["accounts"]:
        for w in account["windows"]:
            table.add_row(
                account["name"],
                str(account["requests"]),
                str(account["provider_429"]),
                w["name"],
                f"{w['limit']:g}",
                f"{w['max_used_in_any_window']:g}",
                "-" if w["utilization"] is None else f"{w['utilization']:.1%}",
            )
    console.print(table)
    for account in result["accounts"]:
        credits = account.get("credits")
        if credits:
            console.print(
                f"{account['name']}: credits billed by the provider {credits['provider_total']:g}, "
                f"settled by reviewq {credits['reviewq_settled_total']:g} "
                f"({credits['difference_pct']}%); per message {credits['per_message']}; "
                f"input bound exceeded {_exceeded(credits)}; deferrals {credits['deferrals']}"
            )
    done, total = result["messages_done"], result["messages_total"]
    console.print(
        f"messages done: {done}/{total}; small-PR wait p95: {result['small_pr_wait_p95_s']} s; "
        f"reserve violations: {result['reserve_check']['violations']}; "
        f"unfinished PRs: {len(result['not_finished'])}"
    )
    for pr, cost in result.get("pushes", {}).get("prs", {}).items():
        console.print(
            f"{pr}: {cost['pushes']} pushes cost {cost['sent']} messages, "
            f"{cost['ratio']}x its full review of {cost['full_review_messages']}"
        )


def _exceeded(credits: dict[str, Any]) -> str:
    calls = sum(b["calls"] for b in credits["input_bound"])
    over = sum(b["exceeded"] for b in credits["input_bound"])
    return f"{over} of {calls} calls"


@click.command("soak")
@click.argument(
    "scenario_path",
    metavar="SCENARIO",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option("--max-growth", default=0.10, show_default=True, help="Allowed memory growth.")
def soak(scenario_path: Path, max_growth: float) -> None:
    """Run SCENARIO as a leak check and print one JSON object: Redis memory and keys
    after warm-up (the first simulated day) and at the end, worker RSS, 429s by code,
    windows over their limit, and messages left in no terminal state.

    Exits 1 if memory grew more than --max-growth after warm-up, a window went over its
    limit, or a message was left unfinished."""
    from scheduler.sim.scenario import load_scenario
    from scheduler.sim.soak import run_soak

    try:
        scenario = load_scenario(scenario_path)
    except ValidationError as exc:
        raise click.BadParameter(_mistakes(exc), param_hint="SCENARIO") from None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="SCENARIO") from None
    real = scenario.duration / scenario.time_scale
    click.echo(
        f"soak: {scenario.duration / 86_400:g} simulated days, at most {real:.0f} s", err=True
    )
    result = run_soak(scenario)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    figures = result["soak"]
    change = figures["redis_state_change"]
    failed = (
        change is None
        or change > max_growth
        or result["windows_over_limit"]
        or figures["messages_not_terminal"]
        or figures["prs_ended"] < figures["prs"]
    )
    sys.exit(1 if failed else 0)


def _mistakes(exc: ValidationError) -> str:
    """Each mistake as `where: what`, without pydantic's web links and input dumps."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err["loc"]) or "(top level)"
        lines.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
    return "the scenario has mistakes:\n" + "\n".join(f"  {line}" for line in lines)
