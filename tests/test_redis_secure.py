"""Redis with a password and TLS (`rediss://`): every door of reviewq reaches it, and
the password never reaches a terminal.

A private redis-server listens on TLS only (no plain port), requires a password, and
presents a certificate from a throwaway CA made by `trustme`; clients verify it.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis as redis_py
import trustme
from click.testing import CliRunner
from rq import Queue, SimpleWorker

from scheduler.cli.main import EXIT_REDIS, main
from scheduler.quota.limiter import Limiter
from scheduler.quota.plans import Policy, get_preset
from scheduler.sandbox.localredis import find_server_binary, free_port

PASSWORD = "s3cret-" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The `rediss://` URL (password and CA included) of a TLS-only, password-only server."""
    directory = tmp_path_factory.mktemp("tls-redis")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    cert.private_key_pem.write_to_path(str(directory / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    port = free_port()
    command = [find_server_binary(), "--port", "0", "--tls-port", str(port)]
    command += ["--tls-cert-file", str(directory / "cert.pem")]
    command += ["--tls-key-file", str(directory / "key.pem")]
    command += ["--tls-ca-cert-file", str(directory / "ca.pem"), "--tls-auth-clients", "no"]
    command += ["--requirepass", PASSWORD, "--save", "", "--appendonly", "no"]
    command += ["--dir", str(directory)]
    log = (directory / "server.log").open("wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    ca_file = quote(str(directory / "ca.pem"), safe="")
    url = f"rediss://:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={ca_file}"
    try:
        _wait_ready(url, proc, directory / "server.log")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text(errors="replace")
            if "tls" in text.lower() and "FATAL" in text:
                pytest.skip(f"this redis-server was built without TLS: {text[-300:]}")
            pytest.fail(f"TLS redis-server exited: {text[-500:]}")
        try:
            if redis_py.Redis.from_url(url).ping():
                return
        except redis_py.ConnectionError:
            time.sleep(0.05)
    pytest.fail("TLS redis-server did not answer within 10 s")


def _config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "reviewq.toml"
    path.write_text(
        f'redis_url = "{url}"\nqueue_name = "q-{uuid.uuid4().hex[:8]}"\n'
        '[[accounts]]\nname = "synth"\nplan = "synthetic"\napi_key_env = "REVIEWQ_TEST_KEY"\n'
    )
    return path


def test_plain_connections_are_refused(tls_redis: str) -> None:
    """Guards the fixture: the server really demands TLS and the password."""
    no_password = tls_redis.replace(f":{PASSWORD}@", "")
    with pytest.raises(redis_py.AuthenticationError):
        redis_py.Redis.from_url(no_password).ping()
    plain = tls_redis.replace("rediss://", "redis://").split("?")[0]
    with pytest.raises(redis_py.ConnectionError):
        redis_py.Redis.from_url(plain, socket_timeout=2).ping()


def test_the_limiter_runs_its_scripts_over_tls(tls_redis: str) -> None:
    client = redis_py.Redis.from_url(tls_redis)
    limiter = Limiter(client, f"tls-{uuid.uuid4().hex[:8]}", get_preset("synthetic"), Policy())
    grant = limiter.acquire(1000, pr="acme/api#1", request_id="r1", lease_ms=60_000)
    assert grant.granted
    assert limiter.status().windows[0].used == 1000
    client.close()


def _one() -> int:
    return 1


def test_rq_jobs_run_over_tls(tls_redis: str) -> None:
    client = redis_py.Redis.from_url(tls_redis)
    queue = Queue(f"tls-{uuid.uuid4().hex[:8]}", connection=client)
    job = queue.enqueue(_one)
    SimpleWorker([queue], connection=client).work(burst=True)
    assert job.get_status(refresh=True) == "finished"
    assert job.return_value() == 1
    client.close()


def test_cli_enqueues_and_inspects_over_tls_without_showing_the_password(
    tls_redis: str, tmp_path: Path
) -> None:
    config = _config(tmp_path, tls_redis)
    diff = tmp_path / "change.diff"
    diff.write_text(
        "diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -1 +1,2 @@\n x = 1\n+y = 2\n"
    )
    runner = CliRunner()
    queued = runner.invoke(
        main, ["--config", str(config), "enqueue", "--diff", str(diff), "--pr", "tls-pr"]
    )
    assert queued.exit_code == 0, queued.output
    inspected = runner.invoke(main, ["--config", str(config), "inspect", "--json"])
    assert inspected.exit_code == 0, inspected.output
    snapshot = json.loads(inspected.stdout)
    assert snapshot["queues"]["queued"] == 1
    for output in (queued.output, inspected.output):
        assert PASSWORD not in output
    shown = runner.invoke(main, ["--config", str(config), "config"])
    assert shown.exit_code == 0 and PASSWORD not in shown.output


def test_a_wrong_password_exits_3_without_echoing_it(tls_redis: str, tmp_path: Path) -> None:
    wrong = tls_redis.replace(PASSWORD, "not-the-password")
    config = _config(tmp_path, wrong)
    result = CliRunner().invoke(main, ["--config", str(config), "inspect"])
    assert result.exit_code == EXIT_REDIS, result.output
    assert "not-the-password" not in result.output and PASSWORD not in result.output


def test_a_password_in_the_query_string_is_used_and_never_shown(
    tls_redis: str, tmp_path: Path
) -> None:
    """redis-py also authenticates with `?password=`: the CLI reaches the server with
    it, and its output masks it as it masks a password in the userinfo."""
    url = tls_redis.replace(f":{PASSWORD}@", "") + f"&password={quote(PASSWORD, safe='')}"
    assert redis_py.Redis.from_url(url).ping()
    config = _config(tmp_path, url)
    runner = CliRunner()
    for args in (["config"], ["inspect"], ["inspect", "--json"]):
        result = runner.invoke(main, ["--config", str(config), *args])
        assert result.exit_code == 0, result.output
        assert PASSWORD not in result.output and "password=****" in result.output, args
