"""A `Snapshot` as rich tables: queues, accounts and their windows, PRs, messages.

Kept apart from the snapshot so the JSON and the tables read one model; here every
number is formatted, in the snapshot none is.
"""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from scheduler.cli.render import format_amount, format_duration
from scheduler.ops.snapshots import AccountView, Eta, PrSummary, Snapshot, WindowView

__all__ = ["render_snapshot", "since"]


def since(ms: int | None) -> str:
    """A span for people: whole seconds past a second, `-` when there is none."""
    if ms is None:
        return "-"
    if ms < 0:
        return "-" + since(-ms)
    return format_duration(ms if ms < 1000 else ms // 1000 * 1000) if ms else "0s"


def _queues(snap: Snapshot) -> Table:
    q = snap.queues
    table = Table(
        title=f"Queue {snap.queue_name} (Redis {snap.redis_url})",
        caption="RQ jobs, then messages: waiting for an account, for a time, running",
    )
    for column in ("queued", "started", "sched.", "deferred", "failed"):
        table.add_column(column, justify="right")
    table.add_column("for budget")
    table.add_column("timed", justify="right")
    table.add_column("running", justify="right")
    lines = "\n".join(f"{name}: {n}" for name, n in q.waiting_for_budget.items()) or "-"
    failed = Text(str(q.failed), style="bold red" if q.failed else "")
    table.add_row(
        *(str(n) for n in (q.queued, q.started, q.scheduled, q.deferred)),
        failed,
        lines,
        str(q.timed),
        str(q.running),
    )
    return table


def _state(account: AccountView) -> Text:
    text = Text()
    if account.circuit is not None:
        closes = since(account.circuit.expires_in_ms) if account.circuit.expires_in_ms else "never"
        text.append(f"OUT OF SERVICE ({account.circuit.code}): ", style="bold red")
        text.append(f"{account.circuit.message} (expires: {closes})\n")
    if account.block is not None:
        text.append(f"blocked {since(account.block.in_ms)}: ", style="yellow")
        text.append(f"{account.block.reason}\n")
    cap = account.concurrency if account.concurrency is not None else "uncapped"
    text.append(f"{account.in_use} / {cap} in flight")
    view = account.provider_view
    found = view.detection if view is not None else None
    if found is not None and found.mismatch:
        kind = "a V3 credit key" if found.metering == "credits" else "a V2 prompt key"
        text.append(f"\nKEY MISMATCH: the quota endpoint says {kind}; ", style="bold red")
        text.append(f"plan {account.plan} counts {found.configured}: use plan = ")
        text.append(f"{found.suggested!r}", style="bold")
    for bound in view.input_bound if view is not None else []:
        text.append(
            f"\ninput bound {bound.model}: x{bound.factor:.2f} of chars/4, exceeded "
            f"{bound.exceeded} of {bound.calls} calls"
        )
    return text


def _accounts(snap: Snapshot) -> Table:
    table = Table(title="Accounts (main first)", show_lines=True)
    columns = ("Account", "Window", "Used / limit", "%", "Next unit frees in", "Reserve", "State")
    for column in columns:
        table.add_column(column, overflow="fold")
    for account in snap.accounts:
        windows = account.windows or []
        name = f"{account.name}\n{account.plan} ({account.provider})"
        if not windows:
            table.add_row(name, "none", "-", "-", "-", "-", _state(account))
        for i, w in enumerate(windows):
            style = "red" if w.free_milli == 0 else "yellow" if w.percent >= 80 else ""
            table.add_row(
                name if i == 0 else "",
                f"{w.name} ({w.kind})",
                f"{format_amount(w.used_milli, w.unit)} / {format_amount(w.limit_milli, w.unit)}",
                Text(f"{w.percent:g}", style=style),
                since(w.next_free_in_ms),
                _reserve(w),
                _state(account) if i == 0 else "",
            )
    return table


def _reserve(w: WindowView) -> str:
    """The reserve in force, and why: fixed, or sized from demand (docs/reserve.md)."""
    amount = format_amount(w.reserve_milli, w.unit)
    if not w.reserve_adaptive:
        return f"{amount} (fixed)"
    demand = w.reserve_demand or {}
    burst, queued = demand.get("recent", 0) / 1000, demand.get("queued", 0) / 1000
    why = f"adaptive: burst {burst:g}, queued {queued:g}"
    if demand.get("lent"):
        return f"{amount}\n{why} (burst lent)"
    leaving = demand.get("leaving", 0) / 1000
    return f"{amount}\n{why}" + (f" ({leaving:g} leave in time)" if leaving else "")


def _readings(snap: Snapshot) -> Table:
    """Where and when each window's last provider reading came from."""
    table = Table(title="Provider readings (what the provider itself last said)")
    for column in ("Account", "Window", "Source", "When", "Reading", "Moved the limiter"):
        table.add_column(column, overflow="fold")
    for account in snap.accounts:
        view = account.provider_view
        if view is None:
            continue
        for r in view.readings:
            unit = next((w.unit for w in account.windows if w.name == r.window), "")
            reading = f"{format_amount(r.used_milli, unit)} / {format_amount(r.limit_milli, unit)}"
            moved = "yes" if r.moved else "no (ours was as high)"
            table.add_row(
                account.name, r.window, r.source, f"{since(r.age_ms)} ago", reading, moved
            )
        for e in view.empty_answers:
            table.add_row(
                account.name,
                "-",
                e.source,
                f"{since(e.age_ms)} ago",
                "no reading (empty answer)",
                "no",
            )
    return table


def _deferred(snap: Snapshot) -> Table:
    table = Table(title="Waiting for off-peak prices")
    for column in ("PR", "Runs at", "Saves about", "Reason"):
        table.add_column(column, overflow="fold")
    for d in snap.deferred:
        table.add_row(
            d.pr, f"in {since(d.in_ms)}", format_amount(d.saved_milli, "credits"), d.reason
        )
    return table


def _eta(eta: Eta) -> str:
    if eta.kind == "finished":
        return "-"
    if eta.kind == "unknown":
        return f"unknown: {eta.reason}"
    prefix = "in " if eta.kind == "estimate" else "not before "
    return f"{prefix}{since(eta.in_ms)} ({eta.reason})"


def _messages(pr: PrSummary) -> str:
    m = pr.messages
    if pr.status == "planning":
        return "not planned yet"
    text = f"{m.done} / {m.total}"
    extra = [f"{n} {k}" for k, n in (("failed", m.failed), ("cancelled", m.cancelled)) if n]
    extra += [f"{n} {k}" for k, n in (("waiting", m.waiting), ("running", m.running)) if n]
    return text + (f" ({', '.join(extra)})" if extra else "")


def _cost(pr: PrSummary) -> str:
    parts = [
        f"{account} {window} {milli / 1000:g}"
        for account, windows in pr.cost_used_milli.items()
        for window, milli in windows.items()
    ]
    return "\n".join(parts) or "-"


def _prs(snap: Snapshot) -> Table:
    shown = len(snap.prs)
    table = Table(title=f"PRs ({shown} of {snap.prs_total}, most recent first)")
    for column in ("PR", "Status", "Messages done", "Cost used", "Waited", "ETA"):
        table.add_column(column, overflow="fold")
    for pr in snap.prs:
        status = pr.status + (f"\n{pr.error}" if pr.error else "")
        table.add_row(
            f"{pr.pr}\n{pr.head_sha[:12]}",
            status,
            _messages(pr),
            _cost(pr),
            since(pr.waited_ms),
            _eta(pr.eta),
        )
    return table


def _detail(pr: PrSummary, now_ms: int) -> Table:
    table = Table(title=f"Messages of {pr.pr} at {pr.head_sha[:12]} (generation {pr.gen})")
    for column in ("Message", "Status", "Account", "Retries", "Waits", "Due in", "Reason"):
        table.add_column(column, overflow="fold")
    for m in pr.detail or []:
        due = None if m.retry_at_ms is None else m.retry_at_ms - now_ms
        table.add_row(
            m.id,
            m.status,
            m.account or "-",
            str(m.retries),
            str(m.waits),
            since(due) if m.status == "waiting" else "-",
            m.reason or "",
        )
    return table


def render_snapshot(snap: Snapshot) -> RenderableType:
    """Every table of the snapshot, in reading order."""
    parts: list[RenderableType] = [_queues(snap), _accounts(snap)]
    if not snap.accounts:
        parts.append(Text("no accounts configured: add [[accounts]] tables (reviewq plans)"))
    if any(
        a.provider_view and (a.provider_view.readings or a.provider_view.empty_answers)
        for a in snap.accounts
    ):
        parts.append(_readings(snap))
    if snap.deferred:
        parts.append(_deferred(snap))
    parts.append(_prs(snap))
    parts += [_detail(pr, snap.now_ms) for pr in snap.prs if pr.detail is not None]
    call = since(snap.typical_call_ms) if snap.typical_call_ms is not None else "not yet known"
    parts.append(Text(f"typical call: {call}", style="dim"))
    return Group(*parts)
