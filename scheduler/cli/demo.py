"""The `reviewq demo` command: a live view and a summary around `scheduler.sim.demo`."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from scheduler.quota.limiter import Limiter
from scheduler.sim.demo import WebhookIntake, demo_scenario
from scheduler.sim.run import SimRun
from scheduler.sim.simulate import run_scenario
from scheduler.state.records import read_pr

__all__ = ["demo", "summary"]


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


def _view(run: SimRun, now_sim: float, intake: WebhookIntake) -> Group:
    webhooks = ", ".join(f"{k}: {v}" for k, v in sorted(intake.outcomes.items()))
    posted = len(intake.github.control.reviews()) if intake.github else 0
    return Group(
        _windows(run, now_sim),
        _prs(run),
        f"webhooks: {webhooks}",
        f"reviews posted on the fake GitHub: {posted}",
    )


def summary(
    result: dict[str, Any], intake: WebhookIntake, reviews: list[dict[str, Any]]
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
def demo(time_scale: float, as_json: bool) -> None:
    """Run the whole pipeline for about two minutes on this machine: a private Redis
    (or REDIS_URL), the webhook server, worker processes, the provider simulator and
    a fake GitHub. A 140-file PR and 13 small ones arrive as signed webhooks while the
    Lua limiter shares Synthetic's 5-hour window (compressed 300x) between them."""
    console = Console(stderr=as_json)
    intake = WebhookIntake()
    scenario = demo_scenario(time_scale)
    if as_json:
        result = run_scenario(scenario, intake=intake)
    else:
        console.print("[bold]reviewq demo[/]: starting Redis, simulators, server and workers")
        with Live(console=console, refresh_per_second=2) as live:

            def on_tick(run: SimRun, now_sim: float) -> None:
                live.update(_view(run, now_sim, intake))

            result = run_scenario(scenario, intake=intake, on_tick=_throttled(on_tick))
    data = summary(result, intake, intake.last_reviews)
    if as_json:
        json.dump(data, sys.stdout)
        sys.stdout.write("\n")
        return
    console.print("\n[bold]summary[/]")
    console.print_json(data=data)
