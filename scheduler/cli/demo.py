"""The `reviewq demo` command: a live view and a summary around `scheduler.sim.demo`."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import click
import redis as redis_lib
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from scheduler.config import connect_redis, redact_url
from scheduler.quota.limiter import Limiter
from scheduler.sim.demo import WebhookIntake, demo_scenario
from scheduler.sim.gitlab_intake import GitLabWebhookIntake, gitlab_scenario
from scheduler.sim.run import SimRun
from scheduler.sim.simulate import run_scenario
from scheduler.state.records import read_pr

__all__ = ["demo", "summary"]

# Either intake: both deliver webhooks, count outcomes and read the posted reviews back.
Intake = WebhookIntake | GitLabWebhookIntake


def _bar(used: int, limit: int, reserve_from: int, width: int = 40) -> str:
    filled = round(width * min(used, limit) / limit)
    mark = round(width * reserve_from / limit)
    return "".join("#" if i < filled else ("|" if i == mark else ".") for i in range(width))


def _windows(run: SimRun, now_sim: float) -> Table:
    table = Table(title=f"budget (simulated {now_sim / 3600:.1f} h of Synthetic's 5 h window)")
    for col in ("account", "window", "used / limit", "fill ('|' = the reserve starts)"):
        table.add_column(col)
    for account in run.accounts:
        limiter = Limiter(run.redis, account, key_prefix=run.limiter_prefix)
        for w in limiter.status().windows:
            lo = account.policy.caps(w.limit)[1]
            table.add_row(
                account.name,
                w.name,
                f"{w.used / 1000:.0f} / {w.limit / 1000:.0f}",
                _bar(w.used, w.limit, lo),
            )
    return table


def _prs(run: SimRun) -> Table:
    table = Table(title="pull requests (arrived by signed webhook)")
    table.add_column("PR", no_wrap=True)
    for col in ("status", "done / messages", "waited (sim min)", "finished at (sim h)"):
        table.add_column(col)
    for spec in run.prs:
        view = read_pr(run.redis, run.admission.keys, spec.id)
        if view is None:
            continue
        meta, count = view.meta, view.counts().get("done", 0)
        started = run.sim_s(meta.first_started_ms)
        arrived = run.sim_s(meta.arrived_ms) or 0.0
        finished = run.sim_s(meta.finished_ms)
        table.add_row(
            spec.id,
            meta.status,
            f"{count} / {meta.total or '?'}",
            "-" if started is None else f"{(started - arrived) / 60:.1f}",
            "-" if finished is None else f"{finished / 3600:.2f}",
        )
    return table


def _view(run: SimRun, now_sim: float, intake: Intake, forge: str) -> Group:
    # Labelled as in the summary: the forged and repeated deliveries are sent on purpose.
    outcomes = sorted(intake.outcomes.items())
    webhooks = ", ".join(f"{_ON_PURPOSE.get(k, k)}: {v}" for k, v in outcomes)
    return Group(
        _windows(run, now_sim),
        _prs(run),
        f"webhooks: {webhooks}",
        f"reviews posted on the fake {forge}: {len(intake.reviews())}",
    )


def summary(
    result: dict[str, Any], intake: Intake, reviews: list[dict[str, Any]]
) -> dict[str, Any]:
    """The figures that show the promise held: quota as the provider's own referee saw
    it, every PR finished and reviewed once, and how long small PRs waited."""
    per_head = Counter((r.get("pr"), r.get("commit_id")) for r in reviews)
    account = result["accounts"][0]
    return {
        "prs": len(result["prs"]),
        "prs_done": sum(p["status"] == "done" for p in result["prs"]),
        "messages_done": result["messages_done"],
        "messages_total": result["messages_total"],
        "provider_429": account["provider_429"],
        "windows": [
            {
                "name": w["name"],
                "limit": w["limit"],
                "max_used_in_any_window": w["max_used_in_any_window"],
            }
            for w in account["windows"]
        ],
        "small_pr_wait_p50_s": result["small_pr_wait_p50_s"],
        "small_pr_wait_p95_s": result["small_pr_wait_p95_s"],
        "reserve_violations": result["reserve_check"]["violations"],
        "reviews_posted": len(reviews),
        "heads_reviewed_twice": sum(n > 1 for n in per_head.values()),
        "webhooks": dict(intake.outcomes),
        "ended_sim_h": round((result["ended_s"] or 0) / 3600, 2),
        "big_pr": result["prs"][0],
    }


def _throttled(
    tick: Callable[[SimRun, float], None], every_s: float = 0.5
) -> Callable[[SimRun, float], None]:
    """The driver ticks every 50 ms; the view reads Redis and HTTP, so not that often."""
    last = [0.0]

    def throttled(run: SimRun, now_sim: float) -> None:
        if time.monotonic() - last[0] >= every_s:
            last[0] = time.monotonic()
            tick(run, now_sim)

    return throttled


@click.command()
@click.option(
    "--time-scale", default=300.0, show_default=True, help="Simulated seconds per real second."
)
@click.option("--json", "as_json", is_flag=True, help="Print only the final summary as JSON.")
@click.option(
    "--forge",
    type=click.Choice(["github", "gitlab"]),
    default="github",
    show_default=True,
    help="Which fake forge the PRs (or merge requests) live on and reviews go to.",
)
def demo(time_scale: float, as_json: bool, forge: str) -> None:
    """Run the whole pipeline for about 2 minutes on this machine (9 simulated hours
    at x300, plus start-up): a private Redis (or REDIS_URL), the webhook server,
    worker processes, the provider simulator and a fake GitHub (or, with --forge
    gitlab, a fake GitLab). A 140-file PR and 13 small ones arrive as webhooks while
    the Lua limiter shares Synthetic's 5-hour window (compressed 300x) between them.

    \b
    Exit codes:
      0  the demo ran to its end and printed its summary
      1  a part failed to start or the run failed
      3  REDIS_URL is set but that Redis does not answer
    """
    _check_redis_url()
    console = Console(stderr=as_json)
    intake: Intake = WebhookIntake() if forge == "github" else GitLabWebhookIntake()
    scenario = demo_scenario(time_scale)
    if forge == "gitlab":
        scenario = gitlab_scenario(scenario)
    label = "GitHub" if forge == "github" else "GitLab"
    if as_json:
        result = run_scenario(scenario, intake=intake)
    else:
        console.print("[bold]reviewq demo[/]: starting Redis, simulators, server and workers")
        with Live(console=console, refresh_per_second=2) as live:

            def on_tick(run: SimRun, now_sim: float) -> None:
                live.update(_view(run, now_sim, intake, label))

            result = run_scenario(scenario, intake=intake, on_tick=_throttled(on_tick))
    data = summary(result, intake, intake.last_reviews)
    if as_json:
        json.dump(data, sys.stdout)
        sys.stdout.write("\n")
        return
    console.print(_summary_table(data, time_scale))


def _check_redis_url() -> None:
    """A REDIS_URL nobody answers at fails now, as the other commands do (exit 3),
    rather than after the webhook server waited 30 s for it."""
    url = os.environ.get("REDIS_URL")
    if not url:
        return
    client = connect_redis(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis_lib.ConnectionError as exc:
        msg = f"REDIS_URL {redact_url(url)} does not answer: {exc}"
        raise redis_lib.ConnectionError(msg) from None
    finally:
        client.close()


# The deliveries the demo sends on purpose, as a real endpoint also gets them.
_ON_PURPOSE = {
    "rejected (bad signature)": "forged on purpose, refused (bad signature)",
    "200 duplicate": "redelivered on purpose, answered duplicate",
    "202 ignored": "ignored (a draft, sent on purpose)",
    "200 pong": "ping",
    "202 enqueued": "queued for review",
}


def _summary_table(data: dict[str, Any], time_scale: float) -> Table:
    """The summary for a person: what each figure means, in words and units. Times are
    simulated seconds (the run is `time_scale` times faster than real time)."""
    table = Table(title=f"summary (times are simulated: x{time_scale:g})", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("figure")
    done, total = data["messages_done"], data["messages_total"]
    table.add_row(
        "PRs reviewed", f"{data['prs_done']} of {data['prs']} ({done} of {total} messages)"
    )
    table.add_row("provider 429s", str(data["provider_429"]))
    for w in data["windows"]:
        table.add_row(
            f"window {w['name']}",
            f"at most {w['max_used_in_any_window']:g} of {w['limit']:g} used in any window "
            "(the provider simulator's own count)",
        )
    table.add_row(
        "small-PR wait",
        f"p50 {_seconds(data['small_pr_wait_p50_s'])}, p95 {_seconds(data['small_pr_wait_p95_s'])}"
        " (arrival to first review call)",
    )
    big = data["big_pr"]
    table.add_row(
        f"big PR {big['id']}",
        f"{big['files']} files, {big['messages']} messages: first call after "
        f"{_seconds(big['wait_s'])}, finished at {_hours(big['finished_s'])}",
    )
    table.add_row(
        "reviews posted",
        f"{data['reviews_posted']}; heads reviewed twice: {data['heads_reviewed_twice']}",
    )
    hooks = ", ".join(f"{n} {_ON_PURPOSE.get(k, k)}" for k, n in data["webhooks"].items())
    table.add_row("webhook deliveries", hooks)
    return table


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f} s"


def _hours(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 3600:.2f} h"
