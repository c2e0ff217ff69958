"""The `reviewq demo` command: live view and summary around `scheduler.demo`."""

from __future__ import annotations

import json
import os
import statistics
import sys

import click
import redis as redis_lib
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from scheduler.demo import DemoRun, run_demo
from scheduler.localredis import redis_url_or_local

__all__ = ["demo"]


def _bar(used: int, limit: int, reserve_from: int, width: int = 40) -> str:
    filled = round(width * min(used, limit) / limit)
    mark = round(width * reserve_from / limit)
    cells = ["#" if i < filled else ("|" if i == mark else ".") for i in range(width)]
    return "".join(cells)


def _view(run: DemoRun) -> Group:
    status = run.limiter.status()
    policy = run.limiter.policy
    windows = Table(title=f"windows (simulated {run.elapsed() * run.time_scale / 3600:.1f} h)")
    for col in ("window", "used / limit", "fill ('|' = reserve starts)", "big PR"):
        windows.add_column(col)
    for w in status.windows:
        lo = policy.caps(w.limit)[1]
        big = w.pr_used.get(run.prs[0].pr_id, 0)
        windows.add_row(
            w.name,
            f"{w.used / 1000:.0f} / {w.limit / 1000:.0f}",
            _bar(w.used, w.limit, lo),
            f"{big / 1000:.0f}",
        )
    prs = Table(title="pull requests")
    for col in ("PR", "done / total", "arrived s", "first start s", "finished s"):
        prs.add_column(col)
    for p in run.prs:
        if p.arrives_s > run.elapsed():
            continue
        prs.add_row(
            p.pr_id,
            f"{p.done} / {p.messages}",
            f"{p.arrives_s:.1f}",
            "-" if p.first_start_s is None else f"{p.first_start_s:.1f}",
            "-" if p.finished_s is None else f"{p.finished_s:.1f}",
        )
    denials = ", ".join(f"{k}: {v}" for k, v in sorted(run.denials.items())) or "none"
    return Group(windows, prs, f"grants: {run.grants}   denials: {denials}")


def summary(run: DemoRun) -> dict[str, object]:
    small = [p for p in run.prs[1:] if p.first_start_s is not None]
    waits = [p.first_start_s - p.arrives_s for p in small if p.first_start_s is not None]
    status = run.limiter.status()
    return {
        "grants": run.grants,
        "denials": dict(run.denials),
        "windows": [{"name": w.name, "used": w.used, "limit": w.limit} for w in status.windows],
        "big_pr_done": run.prs[0].done,
        "small_prs_started": len(small),
        "small_prs_finished": sum(p.finished_s is not None for p in run.prs[1:]),
        "small_pr_wait_median_s": round(statistics.median(waits), 3) if waits else None,
        "small_pr_wait_max_s": round(max(waits), 3) if waits else None,
    }


@click.command()
@click.option("--seconds", default=45.0, show_default=True, help="Wall-clock length of the run.")
@click.option("--workers", default=4, show_default=True, help="Worker threads (= concurrency).")
@click.option("--json", "as_json", is_flag=True, help="Print only the final summary as JSON.")
def demo(seconds: float, workers: int, as_json: bool) -> None:
    """Watch the limiter share a Synthetic 5-hour window (compressed 600x) between a
    600-message PR and small PRs arriving behind it. Uses REDIS_URL, or starts a
    private Redis that is stopped at the end."""
    url, server = redis_url_or_local(os.environ)
    console = Console(stderr=as_json)
    try:
        client = redis_lib.Redis.from_url(url)
        if as_json:
            result = run_demo(client, seconds=seconds, workers=workers)
        else:
            console.print(f"[bold]reviewq demo[/] on {url}{' (private server)' if server else ''}")
            with Live(console=console, refresh_per_second=4) as live:
                result = run_demo(
                    client,
                    seconds=seconds,
                    workers=workers,
                    on_tick=lambda r: live.update(_view(r)),
                )
                live.update(_view(result))
        data = summary(result)
        if as_json:
            json.dump(data, sys.stdout)
            sys.stdout.write("\n")
        else:
            console.print("\n[bold]summary[/]")
            console.print_json(data=data)
    finally:
        if server is not None:
            server.stop()
