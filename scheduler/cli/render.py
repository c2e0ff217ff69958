"""Turning plans and settings into rich tables for people and JSON-ready dicts for scripts.

Kept apart from the click commands so they stay thin and both views share one reading
of the data. JSON keeps numbers as numbers (milli-units and milliseconds, plus units for
convenience); tables format them. Keys only ever appear through `redact`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.table import Table
from rich.text import Text

from scheduler.config import Settings, redact, redact_url
from scheduler.quota.plans import MILLI, Plan, Policy, Window

__all__ = [
    "WIDE_PLANS_MIN_WIDTH",
    "accounts_table",
    "format_amount",
    "format_duration",
    "plan_json",
    "plans_table",
    "settings_json",
]

_DURATION_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1))


def format_duration(ms: int) -> str:
    """`18000000` -> `5h`, `12120000` -> `3h22m`: the forms config files accept."""
    if ms <= 0:
        return "0s"
    parts = []
    for suffix, size in _DURATION_UNITS:
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{suffix}")
    return "".join(parts)


def format_amount(milli: int, unit: str) -> str:
    """Milli-units back to what a person reads on the provider's page: `$24`, `500 requests`."""
    whole, frac = divmod(milli, MILLI)
    number = f"{whole:,}" if not frac else f"{milli / MILLI:,.3f}".rstrip("0")
    if unit == "usd":
        return f"${number}"
    return f"{number} {unit}"


def _window_text(window: Window) -> str:
    text = (
        f"{window.name}: {format_amount(window.limit_milli, window.unit)} "
        f"/ {format_duration(window.duration_ms)} {window.kind}"
    )
    if window.kind == "regenerating" and window.tick_ms is not None:
        regen = format_amount(window.regen_milli, window.unit)
        text += f", +{window.tick_percent:g}% ({regen}) every {format_duration(window.tick_ms)}"
    return text


def _concurrency_text(plan: Plan) -> str:
    if plan.concurrency is None:
        return "uncapped"
    return f"{plan.concurrency} per model" if plan.concurrency_per_model else str(plan.concurrency)


def _costs_text(plan: Plan) -> str:
    if plan.credit_windows:
        return _prices_text(plan)
    lines = []
    for rule in plan.model_costs:
        line = f"{rule.pattern}: {rule.weight:g}x"
        if rule.peak_weight is not None:
            start, end = rule.peak_hours
            line += (
                f", {rule.peak_weight:g}x {start:02d}:00-{end:02d}:00 UTC{rule.utc_offset_hours:+d}"
            )
        lines.append(line)
    lines.append(f"other models: {plan.default_weight:g}x")
    return "\n".join(lines)


def _prices_text(plan: Plan) -> str:
    """A credit plan: credits per 10,000 tokens per model, and the time factors."""
    lines = ["credits / 10k tokens (in / cached / out):"]
    for p in plan.prices:
        lines.append(f"{p.pattern}: {p.input:g} / {p.cached_input:g} / {p.output:g}")
    tf = plan.time_factors
    if tf is not None:
        days = "Mon-Fri" if tf.peak_days == (0, 1, 2, 3, 4) else f"days {list(tf.peak_days)}"
        lines.append(
            f"x{tf.peak_factor:g} {days} {tf.peak_start}-{tf.peak_end} "
            f"UTC{tf.utc_offset_hours:+g}, x{tf.off_peak_factor:g} otherwise"
        )
    if plan.default_model:
        lines.append(f"default model: {plan.default_model}")
    return "\n".join(lines)


def _policy_text(policy: Policy) -> str:
    return (
        f"headroom {policy.headroom:.0%}\nPR share {policy.pr_share:.0%}\n"
        f"reserve {policy.reserve:.0%}"
    )


# Below this many columns the eight-column table folds words into slivers, so each
# preset becomes one row of two columns: its name over its labels, then its fields.
WIDE_PLANS_MIN_WIDTH = 150


def plans_table(plans: Iterable[Plan], *, width: int | None = None) -> Table:
    """One row per preset, with its source and date beside the numbers it vouches for;
    on a console narrower than `WIDE_PLANS_MIN_WIDTH`, the two-column form."""
    if width is not None and width < WIDE_PLANS_MIN_WIDTH:
        return _plans_narrow(plans)
    table = Table(
        title="Plan presets",
        caption="Limits and concurrency are per pack; packs multiply both. "
        "On sale: whether new subscribers can still buy it.",
        show_lines=True,
    )
    table.add_column("Plan", no_wrap=True, style="bold")
    table.add_column("Provider", no_wrap=True)
    table.add_column("On sale", no_wrap=True)
    table.add_column("Windows")
    table.add_column("Concurrency")
    table.add_column("Model costs")
    table.add_column("Source")
    table.add_column("As of", no_wrap=True)
    for plan in plans:
        source = Text(plan.source)
        if plan.notes:
            source.append(f"\n{plan.notes}", style="dim")
        table.add_row(
            plan.name,
            plan.provider,
            "yes" if plan.on_sale else Text("no", style="yellow"),
            "\n".join(_window_text(w) for w in plan.windows) or "none",
            _concurrency_text(plan),
            _costs_text(plan),
            source,
            plan.as_of.isoformat(),
        )
    return table


def _plans_narrow(plans: Iterable[Plan]) -> Table:
    table = Table(
        title="Plan presets",
        caption="Limits and concurrency are per pack; packs multiply both. "
        "On sale: whether new subscribers can still buy it.",
        show_lines=True,
    )
    table.add_column("Plan", no_wrap=True)
    table.add_column("Windows, concurrency, model costs, source")
    for plan in plans:
        name = Text(plan.name, style="bold")
        name.append(f"\n{plan.provider}\nas of {plan.as_of.isoformat()}\non sale: ")
        name.append("yes" if plan.on_sale else "no", style="" if plan.on_sale else "yellow")
        fields = Text()
        for label, value in (
            ("windows", "\n".join(_window_text(w) for w in plan.windows) or "none"),
            ("concurrency", _concurrency_text(plan)),
            ("model costs", _costs_text(plan)),
            ("source", plan.source),
        ):
            fields.append(f"{label}: ", style="bold")
            fields.append(value.replace("\n", "\n  ") + "\n")
        if plan.notes:
            fields.append(plan.notes, style="dim")
        table.add_row(name, fields)
    return table


def plan_json(plan: Plan) -> dict[str, Any]:
    """The plan's own fields, plus each window's limit in units for readers of the JSON."""
    data = plan.model_dump(mode="json")
    for window, raw in zip(plan.windows, data["windows"], strict=True):
        raw["limit"] = window.limit_milli / MILLI
    return data


def accounts_table(settings: Settings, env: Mapping[str, str]) -> Table:
    """Accounts in failover order, with packs applied, and each key shown redacted."""
    table = Table(
        title=f"Accounts (queue {settings.queue_name}, Redis {redact_url(settings.redis_url)})",
        caption="Listed in failover order: the first is the main account.",
        show_lines=True,
    )
    for column in ("Account", "Windows", "Concurrency", "Policy", "Endpoint and key"):
        table.add_column(column, overflow="fold")
    for account in settings.accounts:
        plan = account.effective_plan
        key = redact(env.get(account.api_key_env))
        table.add_row(
            f"{account.name}\n{account.plan.name} x{account.packs}\n({account.provider})",
            "\n".join(_window_text(w) for w in plan.windows) or "none",
            _concurrency_text(plan),
            _policy_text(account.policy),
            f"{account.base_url}\n{account.api_key_env} = {key}",
        )
    return table


def settings_json(settings: Settings, env: Mapping[str, str]) -> dict[str, Any]:
    """Settings as a script sees them: effective (packed) plans, URL and keys redacted."""
    accounts = []
    for account in settings.accounts:
        data = account.model_dump(mode="json", exclude={"plan"})
        data["plan"] = account.plan.name
        data["effective_plan"] = plan_json(account.effective_plan)
        data["api_key"] = redact(env.get(account.api_key_env))
        accounts.append(data)
    return {
        "redis_url": redact_url(settings.redis_url),
        "queue_name": settings.queue_name,
        "default_policy": settings.default_policy.model_dump(mode="json"),
        "accounts": accounts,
    }
