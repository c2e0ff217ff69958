"""compose.yaml against the Compose specification's JSON schema.

No Docker engine or registry is reachable in CI, so `docker compose config` cannot
check the file; the schema can, offline. It comes vendored in check-jsonschema
(`--builtin-schema vendor.compose-spec`), a PyPI package, so the check is real.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
import yaml

from scheduler.cli import main
from scheduler.config import load_settings
from workers.runtime import RuntimeSpec

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "compose.yaml"
_UNITS = {"h": 3600, "m": 60, "s": 1}


def _seconds(duration: str) -> int:
    """A Compose duration such as `16m` or `1h30m` (the forms this file uses)."""
    total, number = 0, ""
    for char in duration:
        if char.isdigit():
            number += char
        else:
            total, number = total + int(number) * _UNITS[char], ""
    assert not number, f"duration {duration!r} has no unit"
    return total


def compose_schema() -> dict[str, Any]:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads((vendor / "compose-spec.json").read_text("utf-8"))
    return schema


def schema_errors(document: Any) -> list[str]:
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text("utf-8"))
    return document


def test_compose_file_matches_the_compose_spec(compose: dict[str, Any]) -> None:
    assert schema_errors(compose) == []


def test_schema_rejects_a_misspelt_service_key(compose: dict[str, Any]) -> None:
    """Guards against a validator that passes everything (a wrong draft, say)."""
    broken = copy.deepcopy(compose)
    broken["services"]["worker"]["stop_grace"] = broken["services"]["worker"].pop(
        "stop_grace_period"
    )
    assert any("stop_grace" in error for error in schema_errors(broken))


def test_check_jsonschema_cli_agrees() -> None:
    """The same check as a developer would run it from a shell."""
    command = [sys.executable, "-m", "check_jsonschema"]
    command += ["--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_redis_keeps_an_append_only_file(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"] == "redis:7-alpine"
    assert redis["command"] == [
        "redis-server",
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
    ]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert any(volume.endswith(":/data") for volume in redis["volumes"])


def test_workers_wait_for_redis_and_drain_on_stop(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["command"] == ["reviewq", "worker"]
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    # At least the RQ job timeout (RuntimeSpec.job_timeout_s), so a stop never
    # kills a review call whose quota is already spent.
    assert _seconds(worker["stop_grace_period"]) >= RuntimeSpec.job_timeout_s
    assert worker["deploy"]["replicas"] == 2


def test_web_serves_on_all_interfaces(compose: dict[str, Any]) -> None:
    web = compose["services"]["web"]
    assert web["command"] == ["reviewq", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert "healthcheck" in web


@pytest.mark.parametrize("service", ["web", "worker"])
def test_secrets_are_passed_through_without_values(compose: dict[str, Any], service: str) -> None:
    environment = compose["services"][service]["environment"]
    assert environment["REDIS_URL"] == "redis://redis:6379/0"
    secrets = {name: value for name, value in environment.items() if name != "REDIS_URL"}
    assert secrets, "expected provider keys and webhook secrets to be listed"
    assert all(value is None for value in secrets.values()), secrets


def _reviewq_commands(compose: dict[str, Any]) -> list[list[str]]:
    return [
        service["command"]
        for service in compose["services"].values()
        if service.get("command", [None])[0] == "reviewq"
    ]


def test_every_command_compose_runs_exists_in_the_cli(compose: dict[str, Any]) -> None:
    """Parses each command line with the real click group, options included, without
    running it: a renamed command or option breaks this test, not a deployment."""
    commands = _reviewq_commands(compose)
    assert len(commands) >= 2
    for argv in commands:
        group_ctx = click.Context(main, info_name="reviewq")
        command = main.get_command(group_ctx, argv[1])
        assert isinstance(command, click.Command), f"no command {argv[1]!r} for {argv}"
        command.make_context(argv[1], list(argv[2:]), parent=group_ctx)


def test_cli_parse_check_rejects_an_unknown_option() -> None:
    """The check above really parses: a misspelt option fails it."""
    group_ctx = click.Context(main, info_name="reviewq")
    command = main.get_command(group_ctx, "worker")
    assert command is not None
    with pytest.raises(click.NoSuchOption):
        command.make_context("worker", ["--procs", "2"], parent=group_ctx)


def test_the_dashboard_is_optional(compose: dict[str, Any]) -> None:
    dashboard = compose["services"]["rq-dashboard"]
    assert dashboard["profiles"] == ["dashboard"]
    assert dashboard["environment"]["RQ_DASHBOARD_REDIS_URL"] == "redis://redis:6379/0"


def test_services_read_the_mounted_settings_file(compose: dict[str, Any]) -> None:
    for name in ("web", "worker"):
        mounts = compose["services"][name]["volumes"]
        assert "./reviewq.toml:/etc/reviewq/reviewq.toml:ro" in mounts


def test_the_example_settings_file_loads() -> None:
    """The file compose.yaml tells people to copy is valid as shipped."""
    settings = load_settings(ROOT / "reviewq.example.toml", env={})
    assert [a.name for a in settings.accounts] == ["synth", "zai"]
    assert settings.review.sink == "github"


def test_dockerfile_runs_unprivileged_on_python_311() -> None:
    """No Docker engine here to build it; these are the promises compose relies on."""
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()]
    instructions = [ln for ln in lines if ln and not ln.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    assert any(ln.startswith("RUN pip install .") for ln in instructions)
    user = [ln for ln in instructions if ln.startswith("USER ")]
    assert user and user[-1] != "USER root"
    assert "ENV REVIEWQ_CONFIG=/etc/reviewq/reviewq.toml" in instructions
    assert instructions[-1] == 'CMD ["reviewq", "worker"]'
