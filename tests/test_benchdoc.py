"""`reviewq bench report` renders what the commands printed, and writes the page.

The full report takes about 20 minutes (it is a documented command); here two of its
commands run briefly for real and their own output goes through the renderers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler.bench.report import _chaos, _limiter, _webhook

pytestmark = pytest.mark.slow


def _reviewq(*args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", "from scheduler.cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    data: dict[str, object] = json.loads(done.stdout)
    return data


def test_limiter_figures_render_with_their_ratios() -> None:
    # Not importorskip: `limits` is in the test extra, so CI compares against it.
    import limits  # noqa: F401

    data = _reviewq(
        "bench", "limiter", "--seconds", "0.3", "--clients", "1", "--rounds", "1", "--json"
    )
    text = "\n".join(_limiter(data))
    assert "| reviewq | 1 |" in text and "| evalsha | 1 |" in text
    assert "p50 ratio reviewq/evalsha (1 client):" in text
    assert "throughput ratio reviewq/limits, 1 client(s):" in text


def test_webhook_figures_render_with_the_bar() -> None:
    data = _reviewq(
        "bench", "webhook", "--deliveries", "200", "--warmup", "20", "--concurrency", "4", "--json"
    )
    text = "\n".join(_webhook(data))
    assert "200 signed deliveries, concurrency 4:" in text
    assert "bar: >= 500/s and p99 < 50 ms:" in text


def test_chaos_results_come_from_pytest_junit(tmp_path: Path) -> None:
    tests = tmp_path / "test_sample.py"
    tests.write_text("def test_ok():\n    pass\n\ndef test_bad():\n    assert False\n")
    junit = tmp_path / "out.xml"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(tests),
            f"--junitxml={junit}",
            "--rootdir",
            str(tmp_path),
        ],
        capture_output=True,
        check=False,
        cwd=tmp_path,
    )
    rows = "\n".join(_chaos(junit))
    assert "| test_ok | passed |" in rows
    assert "| test_bad | FAILED |" in rows
    assert _chaos(tmp_path / "missing.xml") == ["- no results (the run did not write its report)"]
