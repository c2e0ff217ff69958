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

import jsonschema
import pytest
import yaml

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "compose.yaml"


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
    assert worker["stop_grace_period"] == "10m"
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
