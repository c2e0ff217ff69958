"""The scheduled checks that are too slow for CI, in one command with one summary.

Runs, one after another, each with its own private Redis servers:
1. the limiter's reference-model soak (`tests/test_limiter_property.py`, 600 x FACTOR
   examples of 80 steps, every path and every denial reason reached);
2. the same soak against a 3-primary Redis Cluster (`tests/cluster/test_limiter_cluster.py`);
3. the Sentinel failover loss-window soak (`tests/cluster/test_failover_sentinel.py`,
   FACTOR failovers per setting);
4. three whole rounds of the chaos suite, long scenarios included (`tests/chaos`).
Then prints one table: each step's tests passed, failed and skipped, and its time.

Run (docs/testing.md; with the default factor 5, about an hour on 2 cores):
    python scripts/soak.py                  # everything
    python scripts/soak.py --factor 1       # a shorter soak
    python scripts/soak.py --only property --only chaos

Exits 1 if any step failed or ran no test. Not run in CI: schedule it (cron, a nightly
job) on a machine like production's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Step:
    name: str
    args: tuple[str, ...]
    env: dict[str, str]


def steps(factor: int, chaos_rounds: int) -> list[Step]:
    soak = {"REVIEWQ_SOAK": str(factor)}
    slow = ("-m", "slow", "--timeout", "0", "-s")
    return [
        Step("property", ("tests/test_limiter_property.py", "-k", "soak", *slow), soak),
        Step(
            "cluster",
            ("tests/cluster/test_limiter_cluster.py", "-k", "soak", *slow),
            soak,
        ),
        Step(
            "failover",
            ("tests/cluster/test_failover_sentinel.py", "-k", "soak", *slow),
            soak,
        ),
        Step(
            "chaos",
            ("-m", "chaos", "tests/chaos"),
            {"REVIEWQ_CHAOS": "1", "REVIEWQ_CHAOS_RUNS": str(chaos_rounds)},
        ),
    ]


@dataclass
class Outcome:
    step: Step
    code: int
    seconds: float
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    log: Path | None = None

    @property
    def ok(self) -> bool:
        return self.code == 0 and self.failed == 0 and self.passed > 0


def count(junit: Path, outcome: Outcome) -> None:
    """Passed, failed (failures and errors) and skipped test cases from pytest's junit."""
    if not junit.exists():
        return
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        if kinds & {"failure", "error"}:
            outcome.failed += 1
        elif "skipped" in kinds:
            outcome.skipped += 1
        else:
            outcome.passed += 1


def run(step: Step, logs: Path) -> Outcome:
    junit, log = logs / f"{step.name}.xml", logs / f"{step.name}.log"
    cmd = [sys.executable, "-m", "pytest", *step.args, "-p", "no:cacheprovider"]
    cmd += [f"--junitxml={junit}", "-ra"]
    print(f"\n=== {step.name}: {' '.join(cmd[3:])}", flush=True)
    print("    " + " ".join(f"{k}={v}" for k, v in step.env.items()), flush=True)
    start = time.monotonic()
    with log.open("w") as out:
        code = subprocess.run(
            cmd, cwd=ROOT, env={**os.environ, **step.env}, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    outcome = Outcome(step, code, time.monotonic() - start, log=log)
    count(junit, outcome)
    tail = log.read_text(errors="replace").strip().splitlines()[-1:]
    print(f"    exit {code} in {outcome.seconds:.0f} s: {tail[0] if tail else ''}", flush=True)
    return outcome


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--factor", type=int, default=5, help="REVIEWQ_SOAK (default 5)")
    parser.add_argument("--chaos-rounds", type=int, default=3, help="chaos rounds (default 3)")
    parser.add_argument(
        "--only",
        action="append",
        choices=["property", "cluster", "failover", "chaos"],
        help="run only these steps (repeatable)",
    )
    parser.add_argument("--logs", type=Path, help="keep each step's log and junit here")
    args = parser.parse_args()
    logs = args.logs or Path(tempfile.mkdtemp(prefix="reviewq-soak-"))
    logs.mkdir(parents=True, exist_ok=True)
    chosen = [
        s for s in steps(args.factor, args.chaos_rounds) if not args.only or s.name in args.only
    ]
    outcomes = [run(step, logs) for step in chosen]
    print(
        f"\nsoak summary (factor {args.factor}, {args.chaos_rounds} chaos rounds; logs in {logs})"
    )
    print(f"{'step':10} {'result':7} {'passed':>6} {'failed':>6} {'skipped':>7} {'time':>8}")
    for o in outcomes:
        verdict = "ok" if o.ok else "FAILED"
        mins = f"{o.seconds / 60:.1f} min"
        print(f"{o.step.name:10} {verdict:7} {o.passed:6} {o.failed:6} {o.skipped:7} {mins:>8}")
    failed = [o.step.name for o in outcomes if not o.ok]
    total = sum(o.seconds for o in outcomes) / 60
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} steps passed in {total:.0f} min")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
