"""A `simulate` run as one self-contained HTML page: what a team looks at before buying
a plan.

Everything is inline (no script, no stylesheet or font from a CDN, charts drawn as
SVG here), so the file opens offline, can be mailed, and renders the same years later.
It is drawn from the run's JSON report alone (`scheduler.sim.report`): each window's
use over simulated time against its limit and spendable part, from the grant trace;
how many messages stood in each account's line, from the release events; and each
PR's wait from arrival to first grant, coloured by size. PR ids come from scenario
files and webhooks: every text is escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

__all__ = ["render_html"]

_W, _H = 860, 260  # one chart's drawing area, in SVG units
_PAD = 48
_SIZES = (  # PR size buckets for the wait chart: (most files, label, colour)
    (10, "small (≤ 10 files)", "#2b8a3e"),
    (50, "medium (≤ 50 files)", "#e67700"),
    (10**9, "large (> 50 files)", "#c92a2a"),
)
_SERIES = ("#1c7ed6", "#ae3ec9", "#0ca678", "#f08c00", "#495057")
_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#212529}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 6px}
p.note{color:#495057;margin:2px 0 10px;max-width:900px}
table{border-collapse:collapse;margin:8px 0}
td,th{padding:3px 10px;border-bottom:1px solid #dee2e6;text-align:left}
svg{background:#fff;border:1px solid #dee2e6} .axis{stroke:#adb5bd;stroke-width:1}
text{font:11px system-ui,sans-serif;fill:#495057}
"""


@dataclass(frozen=True, slots=True)
class _Series:
    label: str
    points: Sequence[tuple[float, float]]
    colour: str
    step: bool = True
    dashed: bool = False


def render_html(report: dict[str, Any], *, title: str = "reviewq simulate") -> str:
    """The page for `report` (the dict `simulate --json` prints)."""
    xs = _run_span(report)
    sections = [
        f"<h1>{escape(title)}</h1>",
        _summary(report),
        *_window_charts(report, xs),
        _line_chart(report, xs),
        _wait_chart(report, xs),
    ]
    body = "\n".join(s for s in sections if s)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def _summary(report: dict[str, Any]) -> str:
    scenario = report.get("scenario", {})
    rows = [
        ("policy", scenario.get("policy")),
        ("simulated duration", _hours(scenario.get("duration_s"))),
        ("time scale", f"x{scenario.get('time_scale')}"),
        ("messages done", f"{report.get('messages_done')} of {report.get('messages_total')}"),
        ("small-PR wait p95", _seconds(report.get("small_pr_wait_p95_s"))),
        ("PRs not finished", len(report.get("not_finished") or [])),
    ]
    for account in report.get("accounts", []):
        rows.append(
            (
                f"account {account['name']}",
                f"{account['requests']} requests, {account['provider_429']} provider 429s",
            )
        )
    cells = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table>{cells}</table>"


def _run_span(report: dict[str, Any]) -> tuple[float, float]:
    """One time axis for every chart: the run's start to its end, simulated seconds."""
    end = report.get("ended_s") or report.get("scenario", {}).get("duration_s")
    times = [float(e["t_s"]) for e in report.get("trace", []) if e.get("t_s") is not None]
    return _span([0.0, float(end or 0.0), *times])


def _window_charts(report: dict[str, Any], xs: tuple[float, float]) -> list[str]:
    """One chart per account window: reviewq's own count after each grant."""
    grants = [e for e in report.get("trace", []) if e.get("event", "grant") == "grant"]
    reserves = report.get("reserve") or {}
    out = []
    for account in report.get("accounts", []):
        mine = [g for g in grants if g.get("account") == account["name"]]
        history = (reserves.get(account["name"]) or {}).get("history") or []
        for window in account.get("windows", []):
            out.append(_window_chart(account["name"], window, mine, xs, history))
    return out


def _reserve_line(
    window: dict[str, Any], hi: float, history: list[dict[str, Any]], xs: tuple[float, float]
) -> _Series | None:
    """An adaptive reserve's line over time: where PRs over their share had to stop
    (the spendable part less the reserve in force, docs/reserve.md)."""
    points = [
        (float(h["t_s"]), hi - float(h["reserve"][window["name"]]))
        for h in history
        if window["name"] in (h.get("reserve") or {}) and h.get("t_s") is not None
    ]
    if not points:
        return None
    points.append((xs[1], points[-1][1]))
    label = "line for PRs over their share (spendable less the adaptive reserve)"
    return _Series(label, points, "#0ca678")


def _window_chart(
    account: str,
    window: dict[str, Any],
    grants: list[dict[str, Any]],
    xs: tuple[float, float],
    history: list[dict[str, Any]] | None = None,
) -> str:
    spendable, limit = window.get("spendable"), float(window["limit"])
    hi = spendable if spendable is not None else limit
    used = [
        (float(g["t_s"]), hi - g["remaining"][window["name"]] / 1000)
        for g in grants
        if window["name"] in (g.get("remaining") or {}) and g.get("t_s") is not None
    ]
    series = [_Series("used (reviewq's count after each grant)", used, _SERIES[0])]
    series.append(_Series("limit", [(xs[0], limit), (xs[1], limit)], "#c92a2a", False, True))
    if spendable is not None:
        flat = [(xs[0], spendable), (xs[1], spendable)]
        series.append(_Series("spendable (limit less headroom)", flat, "#e67700", False, True))
    line = _reserve_line(window, hi, history or [], xs)
    if line is not None:
        series.append(line)
    note = (
        f"The provider saw at most {window.get('max_used_in_any_window')} in any window; "
        f"utilization {window.get('utilization')}."
    )
    name = f"{account} · {window['name']}"
    return _chart(f"Window use: {name}", note, series, xs, y_label="used", y_floor=limit)


def _line_chart(report: dict[str, Any], xs: tuple[float, float]) -> str:
    """Messages standing in each account's line, read at every slot release."""
    by_account: dict[str, list[tuple[float, float]]] = {}
    for event in report.get("trace", []):
        if event.get("event") == "release" and event.get("t_s") is not None:
            points = by_account.setdefault(str(event["account"]), [])
            points.append((float(event["t_s"]), float(event.get("waiting", 0))))
    if not by_account:
        return ""
    series = [
        _Series(f"{name}: waiting for budget", pts, _SERIES[i % len(_SERIES)])
        for i, (name, pts) in enumerate(sorted(by_account.items()))
    ]
    note = "Read whenever a call released its slot: how many messages stood in line."
    title = "Queue: messages waiting for each account"
    return _chart(title, note, series, xs, y_label="messages")


def _wait_chart(report: dict[str, Any], xs: tuple[float, float]) -> str:
    """Each PR's wait from arrival to first grant, at its arrival time, by size."""
    prs = [p for p in report.get("prs", []) if p.get("arrived_s") is not None]
    if not prs:
        return ""
    points = [(float(p["arrived_s"]), float(p["wait_s"] or 0.0), p) for p in prs]
    ys = _span([0.0, *(y for _, y, _ in points)])
    marks = []
    for x, y, pr in points:
        colour = next(c for most, _, c in _SIZES if int(pr.get("files", 0)) <= most)
        tip = f"{pr['id']}: {pr.get('files')} files, waited {_seconds(y)}"
        if pr.get("wait_s") is None:
            tip = f"{pr['id']}: {pr.get('files')} files, never started"
        cx, cy = _x(x, xs), _y(y, ys)
        marks.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="{colour}" fill-opacity="0.8">'
            f"<title>{escape(tip)}</title></circle>"
        )
    legend = [(label, colour, False) for _, label, colour in _SIZES]
    svg = _frame(xs, ys, "wait (simulated s)", marks, legend)
    note = "Each dot is a PR at its arrival; higher is a longer wait for its first grant."
    return _section("PR waits, by size", note, svg)


def _chart(
    title: str,
    note: str,
    series: list[_Series],
    xs: tuple[float, float],
    *,
    y_label: str,
    y_floor: float = 0.0,
) -> str:
    ys = _span([0.0, y_floor, *(v for s in series for _, v in s.points)])
    paths = [_path(s, xs, ys) for s in series if s.points]
    legend = [(s.label, s.colour, s.dashed) for s in series]
    return _section(title, note, _frame(xs, ys, y_label, paths, legend))


def _path(series: _Series, xs: tuple[float, float], ys: tuple[float, float]) -> str:
    points = sorted(series.points)
    coords: list[str] = []
    for i, (t, v) in enumerate(points):
        if series.step and i:
            coords.append(f"{_x(t, xs):.1f},{_y(points[i - 1][1], ys):.1f}")
        coords.append(f"{_x(t, xs):.1f},{_y(v, ys):.1f}")
    dash = ' stroke-dasharray="6 4"' if series.dashed else ""
    return (
        f'<polyline fill="none" stroke="{series.colour}" stroke-width="1.6"{dash} '
        f'points="{" ".join(coords)}"><title>{escape(series.label)}</title></polyline>'
    )


def _frame(
    xs: tuple[float, float],
    ys: tuple[float, float],
    y_label: str,
    marks: list[str],
    legend: list[tuple[str, str, bool]],
) -> str:
    """Axes with five ticks each (simulated hours across), the marks, a legend below."""
    width, height = _W + 2 * _PAD, _H + 2 * _PAD + 18 * len(legend)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img">',
        f'<line class="axis" x1="{_PAD}" y1="{_PAD + _H}" x2="{_PAD + _W}" y2="{_PAD + _H}"/>',
        f'<line class="axis" x1="{_PAD}" y1="{_PAD}" x2="{_PAD}" y2="{_PAD + _H}"/>',
    ]
    for i in range(5):
        tx = xs[0] + (xs[1] - xs[0]) * i / 4
        ty = ys[0] + (ys[1] - ys[0]) * i / 4
        parts.append(
            f'<text x="{_x(tx, xs):.1f}" y="{_PAD + _H + 14}" text-anchor="middle">'
            f"{tx / 3600:.1f} h</text>"
        )
        parts.append(
            f'<text x="{_PAD - 6}" y="{_y(ty, ys) + 4:.1f}" text-anchor="end">{ty:.4g}</text>'
        )
    parts.append(f'<text x="{_PAD}" y="{_PAD - 10}">{escape(y_label)}</text>')
    parts += marks
    for i, (label, colour, dashed) in enumerate(legend):
        y = _PAD + _H + 34 + 18 * i
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        parts.append(
            f'<line x1="{_PAD}" y1="{y - 4}" x2="{_PAD + 24}" y2="{y - 4}" stroke="{colour}" '
            f'stroke-width="3"{dash}/><text x="{_PAD + 32}" y="{y}">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _section(title: str, note: str, svg: str) -> str:
    return f'<h2>{escape(title)}</h2>\n<p class="note">{escape(note)}</p>\n{svg}'


def _span(values: Iterable[float]) -> tuple[float, float]:
    found = list(values)
    low, high = (min(found), max(found)) if found else (0.0, 1.0)
    return (low, high) if high > low else (low, low + 1.0)


def _x(t: float, xs: tuple[float, float]) -> float:
    return _PAD + (t - xs[0]) / (xs[1] - xs[0]) * _W


def _y(v: float, ys: tuple[float, float]) -> float:
    return _PAD + _H - (v - ys[0]) / (ys[1] - ys[0]) * _H


def _seconds(value: object) -> str:
    return "n/a" if value is None else f"{float(str(value)):,.1f} s"


def _hours(value: object) -> str:
    return "n/a" if value is None else f"{float(str(value)) / 3600:.1f} h"
