"""`reviewq estimate --diff FILE`: what a PR would cost, before anything runs.

The same planning the workers do (skip rules, packing, degradation), priced against
each configured account's plan, so a person can see that a 300-file PR is 180
messages and 36 % of the team's 5-hour window before it is enqueued.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from scheduler.config import Settings
from workers.providers.client import output_bound
from workers.review.changes import ChangedFile
from workers.review.diff import parse_unified_diff
from workers.review.plan import ReviewPlan
from workers.review.planning import estimate, plan_review

__all__ = ["estimate_command", "plan_summary"]


def plan_summary(plan: ReviewPlan, settings: Settings, model: str) -> dict[str, Any]:
    """Messages, tokens, skipped files, and per account the cost and share of each window.
    A credit window is priced at each message's planned tokens plus the output a call may
    bill, at the plan's highest time factor: what its grants would reserve."""
    review = settings.review
    output = output_bound(review.max_tokens, review.thinking_for(settings.accounts))
    accounts = []
    for account in settings.accounts:
        totals = estimate(plan, account, model, output_tokens=output)
        windows = []
        for window in account.effective_plan.windows:
            cost = totals.get(window.name, 0)
            windows.append(
                {
                    "name": window.name,
                    "unit": window.unit,
                    "cost": cost / 1000,
                    "limit": window.limit_milli / 1000,
                    "share_of_limit": round(cost / window.limit_milli, 4),
                }
            )
        accounts.append({"name": account.name, "windows": windows})
    return {
        "messages": len(plan.messages),
        "estimated_tokens": plan.estimated_tokens,
        "degraded": plan.degraded,
        "note": plan.note,
        "skipped": [s.model_dump() for s in plan.skipped],
        "summarised": list(plan.summarised),
        "summarised_data": [s.model_dump() for s in plan.summarised_data],
        "accounts": accounts,
    }


@click.command("estimate")
@click.option(
    "--diff",
    "diff_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A unified diff (git diff / diff -u output).",
)
@click.option("--repo", default=None, help="owner/repo, for per-repo skip rules.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.pass_context
def estimate_command(ctx: click.Context, diff_path: Path, repo: str | None, as_json: bool) -> None:
    """Plan a PR's review from a diff and price it against each account's windows.

    \b
    Exit codes:
      0  the plan and its cost were printed
      2  the file is not a unified diff, or the configuration is wrong
    """
    settings: Settings = ctx.obj.settings
    model = settings.review.model_for(settings.accounts) if settings.accounts else ""
    files = _read_diff(ctx, diff_path)
    plan = plan_review(files, settings.planning, repo=repo, model=model)
    summary = plan_summary(plan, settings, model)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(
        f"{len(files)} files -> {summary['messages']} messages, "
        f"~{summary['estimated_tokens']} prompt tokens; {len(plan.skipped)} skipped"
    )
    for skipped in plan.skipped:
        click.echo(f"  skip {skipped.path}: {skipped.reason}")
    for data in plan.summarised_data:
        click.echo(f"  summarise {data.path}: {data.reason}")
    if plan.note:
        click.echo(plan.note)
    table = Table("account", "window", "cost", "limit", "share")
    for account in summary["accounts"]:
        for w in account["windows"]:
            table.add_row(
                account["name"],
                w["name"],
                f"{w['cost']:g} {w['unit']}",
                f"{w['limit']:g}",
                f"{w['share_of_limit']:.1%}",
            )
    if summary["accounts"]:
        Console().print(table)
    else:
        click.echo("no accounts configured: costs need [[accounts]] in the config")


def _read_diff(ctx: click.Context, path: Path) -> list[ChangedFile]:
    """The diff's files; a file that holds none (empty, binary, prose) is a usage error
    rather than a cheerful "0 files": the person gave the wrong file."""
    raw = path.read_bytes()
    if b"\x00" in raw[:8192]:
        raise click.BadParameter(f"{path} is a binary file, not a diff", ctx, param_hint="'--diff'")
    files = parse_unified_diff(raw.decode("utf-8", errors="replace"))
    if not files:
        what = "empty" if not raw.strip() else "not a unified diff (no file headers found)"
        msg = f"{path} is {what}; expected `git diff` or `diff -u` output"
        raise click.BadParameter(msg, ctx, param_hint="'--diff'")
    return files
