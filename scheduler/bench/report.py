"""`reviewq bench report`: run every published measurement and write docs/benchmarks.md.

Each section runs one command as a subprocess, exactly as a reader would type it, and
renders what that run printed: no figure in the document is typed by hand. The
machine (cores, CPU, Redis and Python versions) and the date head the page, since the
figures only mean something next to them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

__all__ = ["report_command"]


@dataclass(frozen=True)
class _Section:
    title: str
    argv: list[str]  # as shown: starts with `reviewq` or `pytest`
    render: Callable[[Any], list[str]]
    json_output: bool = True


def _run(argv: list[str], env: dict[str, str]) -> tuple[str, float, int]:
    """Run `argv` with this interpreter (so `reviewq` is this checkout's); returns
    stdout, wall seconds and the exit code."""
    if argv[0] == "reviewq":
        real = [sys.executable, "-c", "from scheduler.cli.main import main; main()", *argv[1:]]
    else:
        real = [sys.executable, "-m", *argv]
    started = time.monotonic()
    done = subprocess.run(real, capture_output=True, text=True, env=env, check=False)
    if done.returncode not in (0, 1):
        sys.stderr.write(done.stderr[-4000:])
    return done.stdout, time.monotonic() - started, done.returncode


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


def _sections(junit: Path) -> dict[str, _Section]:
    return {
        "limiter": _Section("Limiter", ["reviewq", "bench", "limiter", "--json"], _limiter),
        "fair": _Section(
            "Fair sharing: a 400-file PR and a stream of small ones (policy fair)",
            ["reviewq", "simulate", "scenarios/issue4.yaml", "--json"],
            _simulation,
        ),
        "fifo": _Section(
            "The same traffic in plain FIFO order (the baseline)",
            ["reviewq", "simulate", "scenarios/issue4.yaml", "--policy", "fifo", "--json"],
            _simulation,
        ),
        "webhook": _Section(
            "Webhook throughput: one server process",
            ["reviewq", "bench", "webhook", "--json"],
            _webhook,
        ),
        "webhook-2": _Section(
            "Webhook throughput: one server process per core",
            ["reviewq", "bench", "webhook", "--workers", "2", "--json"],
            _webhook,
        ),
        "chaos": _Section(
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
        "soak": _Section(
            "Soak: a week of a Z.AI Pro key at x3000",
            ["reviewq", "soak", "scenarios/soak.yaml"],
            _soak,
        ),
    }


def _shown(argv: list[str]) -> str:
    return " ".join(a for a in argv if not a.startswith("--junitxml="))


def _section(section: _Section, env: dict[str, str]) -> list[str]:
    click.echo(f"running: {_shown(section.argv)}", err=True)
    stdout, seconds, code = _run(section.argv, env)
    head = [f"## {section.title}", "", "```bash", _shown(section.argv), "```", ""]
    try:
        data = json.loads(stdout) if section.json_output else None
        body = section.render(data)
    except (ValueError, KeyError, TypeError) as exc:
        body = [f"- the command failed (exit {code}): {type(exc).__name__}: {exc}"]
    return [*head, *body, "", f"_exit code {code}, {seconds:.0f} s of wall time._", ""]


@click.command("report")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("docs/benchmarks.md"),
    show_default=True,
)
@click.option(
    "--only",
    multiple=True,
    type=click.Choice(list(_sections(Path("chaos.xml")))),
    help="Run only these sections (repeatable); default: all, about 20 minutes.",
)
def report_command(out: Path, only: tuple[str, ...]) -> None:
    """Run every published measurement and write them, with their commands and this
    machine's description, to docs/benchmarks.md. Run it from the repository root."""
    env = {**os.environ, "REVIEWQ_CHAOS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        sections = _sections(Path(tmp) / "chaos.xml")
        chosen = [sections[name] for name in (only or sections)]
        lines = [
            "# reviewq: measured figures",
            "",
            "Generated by `reviewq bench report` (this file is its output; rerun it to check).",
            "Every figure below is what the command above it printed in that run.",
            "",
            *_machine(),
            "",
        ]
        for section in chosen:
            lines += _section(section, env)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    click.echo(f"wrote {out}", err=True)
