"""`reviewq simulate --report FILE.html`: one self-contained page a team looks at before
buying a plan, opened in a real browser (Debian's headless Chromium, which .ci/run
installs).

The page must load nothing from anywhere (no script, stylesheet, font or image URL),
escape every text that came from a scenario or a webhook, and draw each window's use,
the queue and each PR's wait as SVG that a browser renders.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from scheduler.cli.main import main
from scheduler.sim.html_report import render_html

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = '<script>alert("x")</script>&"\''


def _report(pr_id: str = "acme/api#1") -> dict[str, Any]:
    """The shape `simulate --json` prints, with the trace it keeps for the page."""
    trace: list[dict[str, Any]] = []
    for n in range(12):
        t = 300.0 * n
        remaining = {"requests_5h": (50 - n) * 1000}
        trace.append({"event": "grant", "t_s": t, "account": "synth", "remaining": remaining})
        trace.append({"event": "release", "t_s": t + 20, "account": "synth", "waiting": n % 3})
    return {
        "scenario": {"policy": "fair", "time_scale": 300, "duration_s": 18000, "workers": 2},
        "ended_s": 3600.0,
        "prs": [
            {"id": pr_id, "arrived_s": 10.0, "wait_s": 42.0, "files": 4},
            {"id": "acme/mono#2", "arrived_s": 0.0, "wait_s": 600.0, "files": 140},
            {"id": "acme/web#3", "arrived_s": 900.0, "wait_s": None, "files": 20},
        ],
        "accounts": [
            {
                "name": "synth",
                "requests": 12,
                "provider_429": 0,
                "windows": [
                    {
                        "name": "requests_5h",
                        "limit": 60.0,
                        "spendable": 54.0,
                        "max_used_in_any_window": 12.0,
                        "utilization": 0.2,
                    }
                ],
            }
        ],
        "messages_done": 12,
        "messages_total": 12,
        "small_pr_wait_p95_s": 42.0,
        "not_finished": [],
        "trace": trace,
    }


def test_the_page_loads_nothing_and_escapes_every_text() -> None:
    page = render_html(_report(HOSTILE), title=HOSTILE)
    assert "<script" not in page and "alert(" not in page.replace("alert(&quot;", "")
    assert "&lt;script&gt;" in page
    # Nothing to fetch: no src/href attribute, no @import or url() in the style.
    assert not re.search(r"\b(?:src|href)\s*=", page)
    assert "@import" not in page and "url(" not in page
    assert page.count("<svg") == 3  # the window, the queue, the waits


def test_each_pr_is_coloured_by_its_size() -> None:
    page = render_html(_report())
    dots = re.findall(r'<circle [^>]*fill="(#[0-9a-f]{6})"', page)
    assert dots == ["#2b8a3e", "#c92a2a", "#e67700"]  # 4, 140 and 20 files
    assert "never started" in page  # a PR with no first grant says so


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs Debian's package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


def _headless(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Chromium as the probe starts it on this machine: no sandbox (root), no GPU, and
    none of the background networking a closed network refuses."""
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
    return subprocess.run(
        [chromium, *flags, *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.slow
def test_a_real_run_renders_in_headless_chromium(redis_url: str, tmp_path: Path) -> None:
    """The whole path: a real `simulate` run writes the page, and Chromium renders its
    charts (the DOM it built holds the SVG) and takes a screenshot."""
    chromium = _chromium()
    page = tmp_path / "report.html"
    result = CliRunner().invoke(
        main,
        ["simulate", str(ROOT / "scenarios" / "small.yaml"), "--json", "--report", str(page)],
        env={"REDIS_URL": redis_url},
    )
    assert result.exit_code == 0, result.output
    dom = _headless(chromium, tmp_path / "profile", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr
    assert dom.stdout.count("<svg") == 3 and "<polyline" in dom.stdout
    assert "Window use: synth" in dom.stdout and "PR waits, by size" in dom.stdout
    shot = tmp_path / "report.png"
    taken = _headless(
        chromium,
        tmp_path / "profile",
        "--hide-scrollbars",
        "--window-size=1000,1900",
        f"--screenshot={shot}",
        page.as_uri(),
    )
    assert taken.returncode == 0 and shot.stat().st_size > 20_000, taken.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
