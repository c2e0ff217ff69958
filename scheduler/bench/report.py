"""`reviewq bench report`: run every published measurement and build docs/benchmarks.md.

Each section runs one command as a subprocess, exactly as a reader would type it, and
renders what that run printed: no figure in the document is typed by hand. The
machine (cores, CPU, Redis and Python versions) and the date head the page, since the
figures only mean something next to them. This module runs the sections and returns
the page's lines; `reviewq bench report` (scheduler.cli.bench) reports progress and
writes the file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "SECTION_NAMES",
    "Section",
    "SectionRun",
    "merge_sections",
    "page_head",
    "report_env",
    "run_section",
    "section_lines",
    "sections",
]


@dataclass(frozen=True)
class Section:
    title: str
    argv: list[str]  # as shown: starts with `reviewq` or `pytest`
    render: Callable[[Any], list[str]]
    json_output: bool = True

    @property
    def shown(self) -> str:
        """The command as the page shows it (without the run's private junit path)."""
        return " ".join(a for a in self.argv if not a.startswith("--junitxml="))


@dataclass(frozen=True)
class SectionRun:
    """What one section's command did: its output, wall seconds and exit code."""

    stdout: str
    stderr: str
    seconds: float
    code: int


def run_section(section: Section, env: dict[str, str]) -> SectionRun:
    """Run the section's command with this interpreter (so `reviewq` is this
    checkout's)."""
    argv = section.argv
    if argv[0] == "reviewq":
        real = [sys.executable, "-c", "from scheduler.cli.main import main; main()", *argv[1:]]
    else:
        real = [sys.executable, "-m", *argv]
    started = time.monotonic()
    done = subprocess.run(real, capture_output=True, text=True, env=env, check=False)
    return SectionRun(done.stdout, done.stderr, time.monotonic() - started, done.returncode)


def report_env() -> dict[str, str]:
    """The environment every section runs in: this one, with the chaos suite enabled."""
    return {**os.environ, "REVIEWQ_CHAOS": "1"}


def _machine() -> list[str]:
    redis = shutil.which("redis-server")
    version = "not found"
    if redis:
        out = subprocess.run([redis, "--version"], capture_output=True, text=True, check=False)
        version = out.stdout.split(" v=")[1].split()[0] if " v=" in out.stdout else out.stdout
    cpu = platform.processor() or "unknown"
    with_cpuinfo = Path("/proc/cpuinfo")
    if with_cpuinfo.exists():
        for line in with_cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return [
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- cores: {os.cpu_count()} ({cpu})",
        f"- Redis: {version}; Python {platform.python_version()}; {platform.platform()}",
    ]


def _limiter(data: dict[str, Any]) -> list[str]:
    rows = ["| contender | clients | ops/s | p50 us | p99 us |", "|---|---|---|---|---|"]
    by = {(r["name"], r["clients"]): r for r in data["results"]}
    for r in data["results"]:
        rows.append(
            f"| {r['name']} | {r['clients']} | {r['ops_per_s']:.0f} | "
            f"{r['p50_us']:.1f} | {r['p99_us']:.1f} |"
        )
    ours, floor = by.get(("reviewq", 1)), by.get(("evalsha", 1))
    lines = [*rows, ""]
    if ours and floor:
        ratio = ours["p50_us"] / floor["p50_us"]
        lines.append(f"- p50 ratio reviewq/evalsha (1 client): {ratio:.2f} (bar <= 1.5)")
    for clients in sorted({r["clients"] for r in data["results"]}):
        a, b = by.get(("reviewq", clients)), by.get(("limits-moving-window", clients))
        if a and b:
            ratio = a["ops_per_s"] / b["ops_per_s"]
            lines.append(
                f"- throughput ratio reviewq/limits, {clients} client(s): {ratio:.2f} (bar >= 0.9)"
            )
    sizes = ", ".join(f"{k} {v:,} B" for k, v in data["memory_bytes"].items())
    return [*lines, f"- memory of one account with a full 500-entry 5 h window: {sizes}"]


def _simulation(data: dict[str, Any]) -> list[str]:
    out = []
    for a in data["accounts"]:
        for w in a["windows"]:
            out.append(
                f"- {a['name']}.{w['name']}: max used in any window {w['max_used_in_any_window']:g}"
                f" of {w['limit']:g}; provider 429s {a['provider_429']}"
            )
    out += [
        f"- messages done: {data['messages_done']} of {data['messages_total']}",
        f"- small-PR wait p50 / p95: {data['small_pr_wait_p50_s']} / "
        f"{data['small_pr_wait_p95_s']} simulated s",
        f"- reserve check violations: {data['reserve_check']['violations']}",
        f"- utilization of the main window: {data['utilization']}",
    ]
    return out


def _credits(data: dict[str, Any]) -> list[str]:
    """A credit plan under a backlog: issue 14's bars on exact charging."""
    out = []
    for a in data["accounts"]:
        credits = a.get("credits")
        if not credits:
            continue
        out.append(f"- {a['name']} ({a['plan']}): provider 429s {a['provider_429']} (bar 0)")
        for w in a["windows"]:
            top, limit, spendable = w["max_used_in_any_window"], w["limit"], w["spendable"]
            met = top <= limit and top >= 0.95 * spendable
            out.append(
                f"- {w['name']}: max used in any window {top:g} of limit {limit:g}, "
                f"{top / spendable:.3f} x its spendable {spendable:g} "
                f"(bar <= limit and >= 0.95 x spendable): {'met' if met else 'MISSED'}"
            )
        diff = credits["difference_pct"]
        out.append(
            f"- credits billed by the provider {credits['provider_total']:g}, settled by reviewq "
            f"{credits['reviewq_settled_total']:g}: {diff}% (bar within 1 %): "
            f"{'met' if diff is not None and abs(diff) <= 1 else 'MISSED'}"
        )
        for b in credits["input_bound"]:
            share = b["exceeded"] / b["calls"] if b["calls"] else 0.0
            out.append(
                f"- input-token bound ({b['model']}, learned x{b['factor']} of chars/4, "
                f"largest ratio {b['max_ratio']}): exceeded on {b['exceeded']} of {b['calls']} "
                f"calls (bar < 0.1 %): {'met' if share < 0.001 else 'MISSED'}"
            )
    out.append(f"- messages done: {data['messages_done']} of {data['messages_total']}")
    return out


def _per_run(data: dict[str, Any]) -> str:
    """Several pairs: the bar is judged on their pooled waits; each pair's own ratio
    shows how far one run alone moves."""
    runs = data.get("runs", 1)
    if runs == 1:
        return ""
    return f", on the pooled waits of {runs} runs a side; each pair's own: " + ", ".join(
        str(r) for r in data["small_pr_wait_p95_ratio_by_run"]
    )


def _offpeak(data: dict[str, Any]) -> list[str]:
    on, off, bars = data["with_offpeak"], data["without_offpeak"], data["bars"]
    rows = [
        "| run | credits | messages done | credits / message | small-PR wait p50 / p95 s "
        "| deferrals | 429s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in (("with off-peak", on), ("without", off)):
        rows.append(
            f"| {name} | {run['provider_credits']:g} | {run['messages_done']} | "
            f"{run['credits_per_message']} | {run['small_pr_wait_p50_s']} / "
            f"{run['small_pr_wait_p95_s']} | {run['deferrals']} | {run['provider_429']} |"
        )
    saving, ratio = data["credits_per_message_saving"], data["small_pr_wait_p95_ratio"]
    return [
        *rows,
        "",
        f"- credits per reviewed message {saving:.1%} lower (bar >= "
        f"{bars['saving_at_least']:.0%}): {'met' if bars['saving_met'] else 'MISSED'}",
        f"- small-PR p95 wait with / without: {ratio} (bar <= "
        f"{1 + bars['small_wait_p95_within']:g}): {'met' if bars['small_wait_met'] else 'MISSED'}"
        + _per_run(data),
        "- large PRs' deferral (simulated s): "
        + ", ".join(f"{p['id']} {p['deferred_s']:g}" for p in on["large_prs"]),
    ]


def _webhook(data: dict[str, Any]) -> list[str]:
    return [
        f"- {data['deliveries']} signed deliveries, concurrency {data['concurrency']}: "
        f"{data['deliveries_per_s']:.0f} deliveries/s, p50 {data['p50_ms']:.1f} ms, "
        f"p99 {data['p99_ms']:.1f} ms, errors {data['errors']}, enqueued {data['enqueued']}",
        f"- bar: >= {data['bar']['deliveries_per_s']:g}/s and p99 < "
        f"{data['bar']['p99_ms_below']:g} ms: {'met' if data['bar']['met'] else 'MISSED'}",
    ]


def _soak(data: dict[str, Any]) -> list[str]:
    s = data["soak"]
    rss = "; ".join(f"{v['warm']:,} -> {v['end']:,} kB" for v in s["worker_rss_kb"].values())
    codes = {a["name"]: a["provider_429_by_code"] for a in data["accounts"]}
    return [
        f"- Redis memory (less the simulation's grant trace) after warm-up / at the end: "
        f"{s['redis_state_bytes_warm']:,} / {s['redis_state_bytes_end']:,} B "
        f"(change {s['redis_state_change']:+.1%}; "
        f"max/min after warm-up {s['redis_state_max_over_min']})",
        f"- keys after warm-up / at the end: {s['keys_warm']} / {s['keys_end']}",
        f"- worker RSS: {rss}",
        f"- PRs ended {s['prs_ended']} of {s['prs']}; messages checked {s['messages_checked']}, "
        f"not terminal {s['messages_not_terminal']}",
        f"- windows over their limit: {data['windows_over_limit'] or 'none'}; "
        f"429s by code: {codes}",
    ]


def _chaos(junit: Path) -> list[str]:
    if not junit.exists():
        return ["- no results (the run did not write its report)"]
    rows = ["| scenario | result | seconds |", "|---|---|---|"]
    for case in ET.parse(junit).getroot().iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        skipped = case.find("skipped") is not None
        result = "FAILED" if failed else ("skipped" if skipped else "passed")
        rows.append(f"| {case.get('name')} | {result} | {float(case.get('time', 0)):.1f} |")
    return rows


def sections(junit: Path) -> dict[str, Section]:
    return {
        "limiter": Section("Limiter", ["reviewq", "bench", "limiter", "--json"], _limiter),
        "fair": Section(
            "Fair sharing: a 400-file PR and a stream of small ones (policy fair)",
            ["reviewq", "simulate", "scenarios/issue4.yaml", "--json"],
            _simulation,
        ),
        "fifo": Section(
            "The same traffic in plain FIFO order (the baseline)",
            ["reviewq", "simulate", "scenarios/issue4.yaml", "--policy", "fifo", "--json"],
            _simulation,
        ),
        "credits": Section(
            "Credit plans: a Z.AI V3 Lite key under token-heavy PRs, across a peak boundary",
            ["reviewq", "simulate", "scenarios/zai-v3-binding.yaml", "--json"],
            _credits,
        ),
        "offpeak": Section(
            "Off-peak scheduling: a weekday with large PRs arriving in peak (V3 Pro)",
            ["reviewq", "bench", "offpeak", "scenarios/zai-v3-offpeak.yaml", "--json"],
            _offpeak,
        ),
        "webhook": Section(
            "Webhook throughput: one server process",
            ["reviewq", "bench", "webhook", "--json"],
            _webhook,
        ),
        "webhook-2": Section(
            "Webhook throughput: one server process per core",
            ["reviewq", "bench", "webhook", "--workers", "2", "--json"],
            _webhook,
        ),
        "chaos": Section(
            "Chaos suite",
            [
                "pytest",
                "tests/chaos",
                "-m",
                "chaos",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--junitxml={junit}",
            ],
            lambda _: _chaos(junit),
            json_output=False,
        ),
        "soak": Section(
            "Soak: a week of a Z.AI Pro key at x3000",
            ["reviewq", "soak", "scenarios/soak.yaml"],
            _soak,
        ),
    }


SECTION_NAMES = tuple(sections(Path("chaos.xml")))


def page_head() -> list[str]:
    """The page's title, what it is, and the machine the figures were taken on."""
    return [
        "# reviewq: measured figures",
        "",
        "Generated by `reviewq bench report` (this file is its output; rerun it to check).",
        "Every figure below is what the command above it printed in that run.",
        "",
        *_machine(),
        "",
    ]


def merge_sections(page: str, fresh: list[list[str]]) -> str:
    """`page` (an earlier report) with each of `fresh` (section lines, `## title`
    first) in place of the section of that title, or added at the end: `--only` then
    updates the sections it ran and keeps the rest as they were measured."""
    blocks: list[list[str]] = [[]]
    for line in page.splitlines():
        if line.startswith("## "):
            blocks.append([])
        blocks[-1].append(line)
    head, body = blocks[0], blocks[1:]
    titles = [b[0] for b in body]
    for section in fresh:
        if section[0] in titles:
            body[titles.index(section[0])] = section
        else:
            body.append(section)
            titles.append(section[0])
    return "\n".join(line for block in [head, *body] for line in block).rstrip("\n") + "\n"


def section_lines(section: Section, run: SectionRun) -> list[str]:
    """The section's heading, its command, what the run printed rendered, and its cost."""
    head = [f"## {section.title}", "", "```bash", section.shown, "```", ""]
    try:
        data = json.loads(run.stdout) if section.json_output else None
        body = section.render(data)
    except (ValueError, KeyError, TypeError) as exc:
        body = [f"- the command failed (exit {run.code}): {type(exc).__name__}: {exc}"]
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cost = f"_exit code {run.code}, {run.seconds:.0f} s of wall time, run {when}._"
    return [*head, *body, "", cost, ""]
