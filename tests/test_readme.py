"""The README's test command is the one CI runs, character for character.

.ci/run does not parse the README at run time (a reworded README must not silently
change what CI executes); instead this test fails when the two drift apart.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- test-command -->"


def readme_test_command() -> str:
    """The single line of the fenced block that directly follows the marker comment."""
    lines = (ROOT / "README.md").read_text("utf-8").splitlines()
    assert [line.strip() for line in lines].count(MARKER) == 1, f"need exactly one {MARKER}"
    at = [line.strip() for line in lines].index(MARKER)
    fence = lines[at + 1].strip()
    assert fence.startswith("```"), f"a fenced code block must follow {MARKER}"
    body = []
    for line in lines[at + 2 :]:
        if line.strip().startswith("```"):
            break
        body.append(line)
    commands = [line for line in body if line.strip()]
    assert len(commands) == 1, f"the test command must be one line, got {commands}"
    return commands[0].strip()


def test_readme_test_command_is_what_ci_runs() -> None:
    command = readme_test_command()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text("utf-8").splitlines()]
    assert command in ci_lines, f".ci/run must contain this line verbatim:\n{command}"


def test_readme_test_command_runs_pytest() -> None:
    assert "pytest" in readme_test_command().split("&&")[-1]


def test_ci_script_is_executable_and_strict() -> None:
    script = ROOT / ".ci" / "run"
    assert os.access(script, os.X_OK)
    assert "set -euo pipefail" in script.read_text("utf-8")


def test_every_install_uses_the_tested_versions() -> None:
    """README's commands, CI's lint step and the image install the versions CI tests
    (constraints.txt): an unpinned install once mixed redis-py 7 and 8 between CI's
    own two virtualenvs."""
    readme = (ROOT / "README.md").read_text("utf-8")
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    docker = (ROOT / "Dockerfile").read_text("utf-8")
    assert readme_test_command().count("pip install -c constraints.txt ") == 1
    assert "pip install -c constraints.txt -e '.[embedded]' && reviewq demo" in readme
    assert "install --quiet -c constraints.txt -e '.[dev]'" in ci
    assert "pip install -c constraints.txt ." in docker
    pins = (ROOT / "constraints.txt").read_text("utf-8").splitlines()
    pinned = {line.split("==")[0].lower() for line in pins if "==" in line}
    assert {"redis", "rq", "hypothesis", "pytest", "httpx", "pydantic"} <= pinned
