"""A newcomer's key mistakes: found before a PR arrives, and fixed without waiting.

`reviewq accounts test` runs against the provider simulator over real HTTP; circuits
and the worker's start-up check run against the real Redis the tests start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_py
from click.testing import CliRunner

from scheduler.cli.main import main
from scheduler.config import load_settings
from scheduler.quota.circuit import Circuit
from scheduler.quota.limiter import LIMITER_PREFIX
from scheduler.quota.plans import get_preset
from scheduler.sandbox import (
    BASE_PATHS,
    DEV_KEY,
    ProviderConfig,
    ServerHandle,
    create_provider_app,
    serve_in_thread,
)
from workers.providers.attempt import Parked, Served, attempt
from workers.providers.client import ChatMessage, ChatRequest
from workers.providers.failover import build_route

KEY_ENV = "REVIEWQ_ACCOUNTS_TEST_KEY"
REVIEWQ = (sys.executable, "-c", "from scheduler.cli.main import main; main()")
ZAI_MODEL = "glm-4.6"


@pytest.fixture(scope="module")
def zai_sim() -> Iterator[tuple[ServerHandle, object]]:
    app = create_provider_app(ProviderConfig(flavour="zai", plan=get_preset("zai-lite"), seed=1))
    with serve_in_thread(app) as handle:
        yield handle, app


def _config(
    tmp_path: Path,
    base_url: str,
    *,
    redis_url: str = "redis://127.0.0.1:1/0",
    model: str = ZAI_MODEL,
    name: str = "zai-main",
    queue: str = "review",
) -> Path:
    path = tmp_path / "reviewq.toml"
    path.write_text(
        f'redis_url = "{redis_url}"\nqueue_name = "{queue}"\n'
        f'[[accounts]]\nname = "{name}"\nplan = "zai-lite"\n'
        f'base_url = "{base_url}"\napi_key_env = "{KEY_ENV}"\n'
        f'[review]\nmodel = "{model}"\nsink = "log"\n'
    )
    return path


def _probe(path: Path, key: str | None, *args: str) -> tuple[int, str]:
    env = {KEY_ENV: key} if key is not None else {}
    runner = CliRunner()
    result = runner.invoke(
        main, ["--config", str(path), "accounts", "test", *args], env=env, catch_exceptions=False
    )
    return result.exit_code, result.output


def _chats(app: object) -> int:
    """Completions the simulator saw: the probe must never send one."""
    return len(app.state.sim.log)  # type: ignore[attr-defined]


def test_probe_passes_a_right_account_and_spends_nothing(
    tmp_path: Path, zai_sim: tuple[ServerHandle, object]
) -> None:
    sim, app = zai_sim
    before = _chats(app)
    path = _config(tmp_path, f"{sim.url}{BASE_PATHS['zai']}")
    code, out = _probe(path, DEV_KEY)
    assert code == 0, out
    assert "zai-main: ok" in out
    assert "model    'glm-4.6' is offered" in out
    assert "/api/monitor/usage/quota/limit answered" in out
    assert DEV_KEY not in out
    assert _chats(app) == before


def test_probe_names_the_key_on_a_401(tmp_path: Path, zai_sim: tuple[ServerHandle, object]) -> None:
    sim, app = zai_sim
    path = _config(tmp_path, f"{sim.url}{BASE_PATHS['zai']}")
    before = _chats(app)
    code, out = _probe(path, "sk-wrong-key-123")
    assert code == 1, out
    assert _chats(app) == before
    assert f"answered 401: the API key in {KEY_ENV} was rejected" in out
    assert "FAIL key" in out
    assert "sk-wrong-key-123" not in out
    assert "1 of 1 account(s) failed: zai-main" in out


def test_probe_names_the_base_url_on_a_404(
    tmp_path: Path, zai_sim: tuple[ServerHandle, object]
) -> None:
    sim, _ = zai_sim
    path = _config(tmp_path, f"{sim.url}/api/paas/v9")
    code, out = _probe(path, DEV_KEY)
    assert code == 1, out
    assert "FAIL base_url" in out and "answered 404: base_url" in out
    assert "/api/paas/v9" in out


def test_probe_names_the_model_id(tmp_path: Path, zai_sim: tuple[ServerHandle, object]) -> None:
    sim, _ = zai_sim
    path = _config(tmp_path, f"{sim.url}{BASE_PATHS['zai']}", model="glm-9-typo")
    code, out = _probe(path, DEV_KEY, "--json")
    assert code == 1, out
    assert '"check": "model"' in out and "'glm-9-typo' is not among the" in out
    assert '"check": "key",\n        "status": "ok"' in out


def test_probe_names_an_unset_variable_and_an_unreachable_host(tmp_path: Path) -> None:
    path = _config(tmp_path, "http://127.0.0.1:1/api/coding/paas/v4")
    code, out = _probe(path, None)
    assert code == 1, out
    assert f"environment variable {KEY_ENV} is not set" in out
    assert "account 'zai-main'" in out and "''s" not in out
    code, out = _probe(path, DEV_KEY)
    assert code == 1 and "FAIL base_url" in out and "no answer" in out


def test_probe_refuses_an_unknown_account(tmp_path: Path) -> None:
    path = _config(tmp_path, "http://127.0.0.1:1/v1")
    code, out = _probe(path, DEV_KEY, "nobody")
    assert code == 2 and "unknown account 'nobody'; accounts: zai-main" in out


def test_circuit_is_shown_and_closed_by_a_person(tmp_path: Path, redis_url: str) -> None:
    path = _config(tmp_path, "http://127.0.0.1:1/v1", redis_url=redis_url, name="circ-acct")
    client = redis_py.Redis.from_url(redis_url)
    circuit = Circuit(client, key_prefix=LIMITER_PREFIX)
    circuit.close("circ-acct")
    circuit.open("circ-acct", "auth", f"the API key in ${KEY_ENV} was rejected; check it")
    runner = CliRunner()
    shown = runner.invoke(main, ["--config", str(path), "accounts", "circuit"])
    assert shown.exit_code == 0, shown.output
    assert "circ-acct: OPEN (auth)" in shown.output
    assert "reviewq accounts close-circuit circ-acct" in shown.output
    closed = runner.invoke(main, ["--config", str(path), "accounts", "close-circuit", "circ-acct"])
    assert closed.exit_code == 0, closed.output
    assert "circuit closed (it was open for auth" in closed.output
    assert not circuit.is_open("circ-acct")
    again = runner.invoke(main, ["--config", str(path), "accounts", "circuit", "--json"])
    assert '"open": false' in again.output
    noop = runner.invoke(main, ["--config", str(path), "accounts", "close-circuit", "circ-acct"])
    assert noop.exit_code == 0 and "was not open" in noop.output
    unknown = runner.invoke(main, ["--config", str(path), "accounts", "close-circuit", "x"])
    assert unknown.exit_code == 2 and "unknown account 'x'" in unknown.output
    client.close()


def test_worker_refuses_to_start_without_a_key(tmp_path: Path) -> None:
    path = _config(tmp_path, "http://127.0.0.1:1/v1")
    env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
    done = subprocess.run(
        [*REVIEWQ, "--config", str(path), "worker", "--burst"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"environment variable {KEY_ENV} is not set" in done.stderr
    assert "not starting" in done.stderr
    assert "Traceback" not in done.stderr


def test_worker_start_closes_a_missing_key_circuit(
    tmp_path: Path, redis_url: str, unique: str
) -> None:
    """A circuit an earlier version opened for a missing key does not outlive the fix."""
    name = f"mk-{unique}"
    path = _config(
        tmp_path, "http://127.0.0.1:1/v1", redis_url=redis_url, name=name, queue=f"q-{unique}"
    )
    client = redis_py.Redis.from_url(redis_url)
    circuit = Circuit(client, key_prefix=LIMITER_PREFIX)
    circuit.open(name, "missing_key", f"environment variable {KEY_ENV} is not set")
    other = f"other-{unique}"
    circuit.open(other, "auth", "a rejected key stays open")
    done = subprocess.run(
        [*REVIEWQ, "--config", str(path), "worker", "--burst"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, KEY_ENV: DEV_KEY},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert f"account {name!r}: its key is set now; closed its missing-key circuit" in done.stdout
    assert not circuit.is_open(name)
    assert circuit.is_open(other)
    circuit.close(other)
    client.close()


@pytest.mark.slow
def test_a_missing_key_parks_without_a_circuit_and_setting_it_is_the_fix(
    tmp_path: Path, redis_url: str, unique: str, zai_sim: tuple[ServerHandle, object]
) -> None:
    sim, app = zai_sim
    name = f"nokey-{unique}"
    path = _config(tmp_path, f"{sim.url}{BASE_PATHS['zai']}", redis_url=redis_url, name=name)
    settings = load_settings(path)
    client = redis_py.Redis.from_url(redis_url)
    env: dict[str, str] = {}
    route = build_route(settings, client, env=env)
    message = ChatRequest(model=ZAI_MODEL, messages=(ChatMessage(role="user", content="hi"),))
    before = _chats(app)
    now = time.time_ns() // 1_000_000
    parked = attempt(message, pr="pr-1", request_id=f"r-{unique}", route=route, now_ms=now)
    assert isinstance(parked, Parked), parked
    assert f"{KEY_ENV} is not set" in parked.reason
    assert not route.circuit.is_open(name)
    assert _chats(app) == before
    env[KEY_ENV] = DEV_KEY  # the person exports the key; nothing else
    served = attempt(message, pr="pr-1", request_id=f"r2-{unique}", route=route, now_ms=now)
    assert isinstance(served, Served), served
    for entry in route.entries:
        entry.client.close()
    client.close()


def test_config_warns_that_the_worker_will_not_start_without_a_key(tmp_path: Path) -> None:
    path = _config(tmp_path, "http://127.0.0.1:1/v1")
    result = CliRunner().invoke(main, ["--config", str(path), "config"], env={KEY_ENV: ""})
    assert result.exit_code == 0, result.output
    assert f"warning: account 'zai-main': {KEY_ENV} is not set" in result.output
    assert "`reviewq worker` will not start until it is" in result.output
    quiet = CliRunner().invoke(main, ["--config", str(path), "config"], env={KEY_ENV: DEV_KEY})
    assert "warning" not in quiet.output and DEV_KEY not in quiet.output


@pytest.mark.slow
def test_a_rejected_key_is_fixed_by_the_key_and_close_circuit_alone(
    tmp_path: Path, redis_url: str, unique: str, zai_sim: tuple[ServerHandle, object]
) -> None:
    """README's advice, end to end: fix the key, close the circuit, and the parked
    message is served at its next recheck, by the same running worker."""
    sim, _ = zai_sim
    name = f"badkey-{unique}"
    path = _config(tmp_path, f"{sim.url}{BASE_PATHS['zai']}", redis_url=redis_url, name=name)
    client = redis_py.Redis.from_url(redis_url)
    env = {KEY_ENV: "sk-typo"}
    route = build_route(load_settings(path), client, env=env)
    message = ChatRequest(model=ZAI_MODEL, messages=(ChatMessage(role="user", content="hi"),))
    now = time.time_ns() // 1_000_000
    parked = attempt(message, pr="pr-2", request_id=f"a-{unique}", route=route, now_ms=now)
    assert isinstance(parked, Parked), parked
    assert route.circuit.is_open(name)
    env[KEY_ENV] = DEV_KEY  # the key is fixed, but the circuit still holds the account
    still = attempt(message, pr="pr-2", request_id=f"b-{unique}", route=route, now_ms=now)
    assert isinstance(still, Parked)
    closed = CliRunner().invoke(main, ["--config", str(path), "accounts", "close-circuit", name])
    assert closed.exit_code == 0 and "circuit closed" in closed.output, closed.output
    served = attempt(message, pr="pr-2", request_id=f"c-{unique}", route=route, now_ms=now)
    assert isinstance(served, Served), served
    for entry in route.entries:
        entry.client.close()
    client.close()
