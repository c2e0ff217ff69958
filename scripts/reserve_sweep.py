"""The adaptive reserve's trade, measured: throughput and small-PR latency against the
reserve's floor, ceiling or `lend_within` (docs/reserve.md, "The sweep").

Runs `reviewq simulate SCENARIO --json` once under `--policy fifo` (the baseline) and
once under `fair` for each `--floor` (then each `--ceiling`, then each
`--lend-within`), that value replacing the scenario's `adaptive.floor`
(`adaptive.ceiling`, `adaptive.lend_within`) in every account that has one,
everything else as the file says; then prints one Markdown table: messages done and
their ratio to FIFO's, small-PR wait p50, p95 and p95's ratio to FIFO's, the time-weighted
mean reserve in force per window, the most any window held (against its spendable
part), provider 429s and reserve-check violations.

Run (about 4 minutes of wall time a run at the scenario's x600):
    python scripts/reserve_sweep.py scenarios/adaptive-reserve.yaml \
        --floor 0 --floor 0.05 --floor 0.1 --floor 0.2 [--report-dir DIR]
    python scripts/reserve_sweep.py scenarios/adaptive-reserve.yaml \
        --ceiling 0.05 --ceiling 0.1 --ceiling 0.15     # the ceiling, the floor as written
    python scripts/reserve_sweep.py scenarios/adaptive-reserve.yaml \
        --lend-within 1h --lend-within 3h               # lending with no burst due

`--report-dir` also writes each run's `simulate --report` page (the reserve in force
over time is drawn on each window's chart). A floor above the ceiling is refused by
the scenario's own validation (exit 2 from simulate).
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

__all__ = ["main", "row", "with_floor"]


def with_floor(scenario: dict[str, Any], floor: float | str, key: str = "floor") -> dict[str, Any]:
    """`scenario` with `floor` as every adaptive account's floor (or, with `key`, its
    ceiling or lend_within). Refuses a scenario without an adaptive account: nothing
    to sweep."""
    out = copy.deepcopy(scenario)
    touched = 0
    for account in out.get("accounts") or []:
        adaptive = (account.get("policy") or {}).get("adaptive")
        if isinstance(adaptive, dict):
            adaptive[key] = floor
            touched += 1
    if not touched:
        raise SystemExit("the scenario has no account with `policy.adaptive`: nothing to sweep")
    return out


def simulate(scenario: dict[str, Any], policy: str, report: Path | None) -> dict[str, Any]:
    """One `reviewq simulate --json` run of `scenario` (written to a temporary file)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(scenario, f, sort_keys=False)
        path = Path(f.name)
    cmd = ["reviewq", "simulate", str(path), "--json", "--policy", policy]
    if report is not None:
        cmd += ["--report", str(report)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    finally:
        path.unlink(missing_ok=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"{' '.join(cmd)}: exit {done.returncode}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def row(label: str, result: dict[str, Any], fifo: dict[str, Any]) -> str:
    """One table row of `result`, ratios against `fifo`'s."""
    msgs, base = result["messages_done"], fifo["messages_done"]
    p95, base_p95 = result["small_pr_wait_p95_s"], fifo["small_pr_wait_p95_s"]
    held, means, errors, violations = [], [], 0, result["reserve_check"]["violations"]
    summary = result.get("reserve") or {}
    for account in result["accounts"]:
        errors += account["provider_429"]
        mean = (summary.get(account["name"]) or {}).get("windows") or {}
        for w in account["windows"]:
            held.append(f"{w['max_used_in_any_window']:g}/{w['spendable']:g}")
            if w["name"] in mean:
                means.append(f"{mean[w['name']]['mean']:g}")
    cells = [
        label,
        f"{msgs} of {result['messages_total']}",
        _ratio(msgs, base),
        f"{result['small_pr_wait_p50_s']}",
        f"{p95}",
        _ratio(p95, base_p95),
        ", ".join(means) or "-",
        ", ".join(held),
        str(errors),
        str(violations),
    ]
    return "| " + " | ".join(cells) + " |"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.3f}"


HEADER = (
    "| run | messages done | x FIFO | small-PR p50 (s) | small-PR p95 (s) | x FIFO | mean "
    "reserve in force (per window) | most held / spendable (per window) | provider 429s | "
    "reserve violations |\n|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--floor", type=float, action="append", default=[])
    parser.add_argument("--ceiling", type=float, action="append", default=[])
    parser.add_argument("--lend-within", action="append", default=[], metavar="DURATION")
    parser.add_argument("--report-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.floor and not args.ceiling and not args.lend_within:
        parser.error("give at least one --floor, --ceiling or --lend-within")
    scenario = yaml.safe_load(args.scenario.read_text())
    if args.report_dir is not None:
        args.report_dir.mkdir(parents=True, exist_ok=True)

    def report(name: str) -> Path | None:
        return None if args.report_dir is None else args.report_dir / f"{name}.html"

    fifo = simulate(scenario, "fifo", report("fifo"))
    lines = [HEADER, row("fifo", fifo, fifo)]
    print(lines[-1], file=sys.stderr, flush=True)  # progress: each row as it comes
    runs: list[tuple[str, float | str]] = [("floor", v) for v in args.floor]
    runs += [("ceiling", v) for v in args.ceiling]
    runs += [("lend_within", v) for v in args.lend_within]
    for key, value in runs:
        name = f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}"
        tag = name.replace(" ", "-")
        result = simulate(with_floor(scenario, value, key), "fair", report(f"fair-{tag}"))
        lines.append(row(f"fair, {name}", result, fifo))
        print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
