"""`reviewq plans` and `reviewq config` as a user and a script see them, exit codes included."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import redis.exceptions
from click.testing import CliRunner, Result

from scheduler.cli.main import EXIT_CONFIG, EXIT_REDIS, main
from scheduler.config import ConfigError
from scheduler.quota.plans import PRESETS

SECRET = "sk-live-0a1b2c3d4e5f6a7b8c9d"
CONFIG = """
[[accounts]]
name = "synth"
plan = "synthetic"
packs = 2

[[accounts]]
name = "zai"
plan = "zai-lite"
"""
# Wide enough that rich never folds a name, and no stray config from the environment.
BASE_ENV = {"COLUMNS": "250", "REVIEWQ_CONFIG": "", "REDIS_URL": "", "REVIEWQ_QUEUE": ""}


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env={**BASE_ENV, **(env or {})})


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def test_plans_json_lists_every_preset_with_numbers() -> None:
    result = run("plans", "--json")
    assert result.exit_code == 0, result.output
    presets = json.loads(result.stdout)["presets"]
    assert [p["name"] for p in presets] == list(PRESETS)
    by_name = {p["name"]: p for p in presets}

    (window,) = by_name["synthetic"]["windows"]
    assert window["limit"] == 500
    assert window["limit_milli"] == 500_000
    assert window["duration_ms"] == 5 * 3_600_000
    assert window["kind"] == "rolling"
    v3 = by_name["synthetic-v3"]["windows"][0]
    assert (v3["kind"], v3["tick_ms"], v3["tick_percent"]) == ("regenerating", 900_000, 5.0)
    assert [w["limit"] for w in by_name["zai-max"]["windows"]] == [1600, 8000]
    assert by_name["zai-developer"]["windows"] == []
    assert by_name["zai-developer"]["concurrency"] is None
    assert by_name["zai-lite"]["model_costs"][0]["peak_weight"] == 3.0
    for preset in presets:
        assert preset["source"]
        assert preset["as_of"] == PRESETS[preset["name"]].as_of.isoformat()


def test_plans_table_for_people() -> None:
    result = run("plans")
    assert result.exit_code == 0, result.output
    for name in PRESETS:
        assert name in result.stdout
    for text in ("500 requests / 5h rolling", "every 15m", "uncapped", "1 per model"):
        assert text in result.stdout
    assert "3x 14:00-18:00 UTC+8" in result.stdout
    assert "2026-02-12" in result.stdout


def test_plans_needs_no_config(tmp_path: Path) -> None:
    (tmp_path / "reviewq.toml").write_text("this is not toml", encoding="utf-8")
    assert run("plans").exit_code == 0
    assert run("--config", "missing.toml", "plans", "--json").exit_code == 0


def test_config_errors_exit_2_with_message(tmp_path: Path) -> None:
    result = run("--config", "missing.toml", "config")
    assert result.exit_code == EXIT_CONFIG
    assert result.stderr == "error: missing.toml: no such file\n"

    (tmp_path / "bad.toml").write_text('[[accounts]]\nname = "a"\nplan = "zai-ultra"\n')
    result = run("--config", "bad.toml", "config")
    assert result.exit_code == EXIT_CONFIG
    assert result.stderr.startswith("error: bad.toml: accounts[0].plan: unknown plan 'zai-ultra'")
    assert result.stdout == ""


def test_config_file_from_environment(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.toml").write_text("queue_nam = 'x'\n")
    result = run("config", env={"REVIEWQ_CONFIG": "elsewhere.toml"})
    assert result.exit_code == EXIT_CONFIG
    assert "elsewhere.toml: queue_nam: unknown key; did you mean 'queue_name'?" in result.stderr


def test_config_shows_accounts_with_keys_redacted(tmp_path: Path) -> None:
    (tmp_path / "reviewq.toml").write_text(CONFIG)
    env = {"SYNTHETIC_API_KEY": SECRET, "REDIS_URL": f"redis://:{SECRET}@localhost:6379/0"}
    table = run("config", env=env)
    assert table.exit_code == 0, table.output
    assert "synth" in table.stdout and "zai-lite" in table.stdout
    assert "1,000 requests / 5h" in table.stdout  # two packs
    assert "SYNTHETIC_API_KEY = ****8c9d" in table.stdout
    assert "ZAI_API_KEY = <unset>" in table.stdout

    as_json = run("config", "--json", env=env)
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["config_file"] == "reviewq.toml"
    assert data["redis_url"] == "redis://:****@localhost:6379/0"
    assert [a["name"] for a in data["accounts"]] == ["synth", "zai"]
    assert data["accounts"][0]["api_key"] == "****8c9d"
    assert data["accounts"][0]["effective_plan"]["windows"][0]["limit"] == 1000
    for result in (table, as_json):
        assert SECRET not in result.output


def test_secret_absent_from_config_errors(tmp_path: Path) -> None:
    (tmp_path / "reviewq.toml").write_text(
        f'[[accounts]]\nname = "a"\nplan = "synthetic"\napi_key = "{SECRET}"\n'
    )
    result = run("config", env={"SYNTHETIC_API_KEY": SECRET})
    assert result.exit_code == EXIT_CONFIG
    assert "accounts[0].api_key: unknown key" in result.stderr
    assert SECRET not in result.output


def test_help_documents_exit_codes() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for line in ("0  success", "1  runtime failure", "2  usage or configuration error"):
        assert line in result.stdout
    assert "3  Redis unreachable" in result.stdout


@pytest.fixture
def failing_command() -> Iterator[None]:
    @click.command("fail-for-test")
    @click.argument("kind")
    def fail(kind: str) -> None:
        if kind == "redis":
            raise redis.exceptions.ConnectionError("Error 111 connecting to localhost:1")
        raise ConfigError("reviewq.toml: accounts[0].plan: broken")

    main.add_command(fail)
    yield
    main.commands.pop("fail-for-test")


@pytest.mark.usefixtures("failing_command")
def test_any_command_maps_config_and_redis_errors() -> None:
    result = run("fail-for-test", "redis")
    assert result.exit_code == EXIT_REDIS
    assert result.stderr == "error: Redis unreachable: Error 111 connecting to localhost:1\n"
    result = run("fail-for-test", "config")
    assert result.exit_code == EXIT_CONFIG
    assert result.stderr == "error: reviewq.toml: accounts[0].plan: broken\n"
