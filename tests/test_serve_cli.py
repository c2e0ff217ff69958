"""`reviewq serve`: refuses to run open, fails fast without Redis, stops on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from webhook_support import SECRET, gh_pr

from scheduler.cli.main import main
from scheduler.sandbox.localredis import free_port
from scheduler.webhook import sign

UNSET: dict[str, str | None] = {
    "GITHUB_WEBHOOK_SECRET": None,
    "GITLAB_WEBHOOK_TOKEN": None,
    "REVIEWQ_CONFIG": None,
}


@pytest.fixture(scope="module")
def open_config(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A config that reviews every repository the webhook is installed on."""
    path = tmp_path_factory.mktemp("serve") / "reviewq.toml"
    path.write_text('[webhook]\nrepositories = ["*"]\n')
    return str(path)


def test_refuses_to_start_without_a_secret_naming_the_variables() -> None:
    result = CliRunner().invoke(main, ["serve"], env=UNSET)
    assert result.exit_code == 2
    assert "GITHUB_WEBHOOK_SECRET" in result.output and "GITLAB_WEBHOOK_TOKEN" in result.output
    assert "--insecure-dev" in result.output


def test_whitespace_is_not_a_secret() -> None:
    env = {**UNSET, "GITHUB_WEBHOOK_SECRET": "  "}
    assert CliRunner().invoke(main, ["serve"], env=env).exit_code == 2


def test_refuses_to_start_without_a_repository_list(tmp_path: Path) -> None:
    """A signed delivery says only that the forge sent it: without a list of the
    repositories to review, anyone who can open a PR could spend the budget."""
    env = {**UNSET, "GITHUB_WEBHOOK_SECRET": SECRET}
    result = CliRunner().invoke(main, ["serve"], env=env)
    assert result.exit_code == 2
    assert "[webhook] repositories" in result.output and 'repositories = ["' in result.output
    config = tmp_path / "reviewq.toml"
    config.write_text('[webhook]\nrepositories = ["acme/api", "bad path!"]\n')
    result = CliRunner().invoke(main, ["--config", str(config), "serve"], env=env)
    assert result.exit_code == 2 and "webhook.repositories[1]" in result.output


def test_exits_3_when_redis_is_unreachable(open_config: str) -> None:
    env = {
        **UNSET,
        "REVIEWQ_CONFIG": open_config,
        "GITHUB_WEBHOOK_SECRET": SECRET,
        "REDIS_URL": f"redis://:pw-secret@127.0.0.1:{free_port()}",
    }
    result = CliRunner().invoke(main, ["serve", "--port", str(free_port())], env=env)
    assert result.exit_code == 3
    assert "Redis unreachable" in result.output and "pw-secret" not in result.output


@contextmanager
def serving(redis_url: str, queue: str, env: Mapping[str, str], *args: str) -> Iterator[str]:
    """`reviewq serve` as a real process; yields its URL once /healthz answers."""
    port = free_port()
    config = Path(tempfile.mkdtemp()) / "reviewq.toml"
    config.write_text('[webhook]\nrepositories = ["*"]\n')
    full_env = {**os.environ, "REDIS_URL": redis_url, "REVIEWQ_QUEUE": queue}
    full_env.update({"REVIEWQ_CONFIG": str(config), **env})
    for name, value in UNSET.items():
        if name not in env and value is None and name != "REVIEWQ_CONFIG":
            full_env.pop(name, None)
    command = [sys.executable, "-c", "from scheduler.cli.main import main; main()", "serve"]
    proc = subprocess.Popen(
        [*command, "--port", str(port), *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, url)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
        serving.last = (proc.returncode, out, err)  # type: ignore[attr-defined]


def _wait_healthy(proc: subprocess.Popen[str], url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"reviewq serve exited {proc.returncode}: {err}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail("reviewq serve did not answer /healthz within 20 s")


@pytest.mark.slow
def test_serves_signed_deliveries_and_stops_gracefully_on_sigterm(
    redis_url: str, unique: str
) -> None:
    body = json.dumps(gh_pr()).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": unique,
        "X-Hub-Signature-256": sign(SECRET.encode(), body),
    }
    with serving(redis_url, f"serve-{unique}", {"GITHUB_WEBHOOK_SECRET": SECRET}) as url:
        response = httpx.post(url + "/webhooks/github", content=body, headers=headers)
        assert response.status_code == 202 and response.json()["status"] == "enqueued"
        unsigned = httpx.post(
            url + "/webhooks/github", content=body, headers={**headers, "X-Hub-Signature-256": ""}
        )
        assert unsigned.status_code == 401
    code, out, err = serving.last  # type: ignore[attr-defined]
    assert code == 0, err
    assert "GitHub: signed" in out and "GitLab: off (GITLAB_WEBHOOK_TOKEN unset)" in out
    assert SECRET not in out + err
    assert "Finished server process" in err and "stopped by SIGTERM" in err


@pytest.mark.slow
def test_insecure_dev_warns_loudly_and_accepts_unsigned(redis_url: str, unique: str) -> None:
    with serving(redis_url, f"serve-{unique}", {}, "--insecure-dev") as url:
        response = httpx.post(
            url + "/webhooks/gitlab",
            json={
                "object_kind": "merge_request",
                "project": {"path_with_namespace": "g/p"},
                "object_attributes": {
                    "iid": 1,
                    "action": "open",
                    "last_commit": {"id": "abc" * 13 + "d"},
                },
            },
            headers={"X-Gitlab-Event-UUID": f"uuid-{unique}"},
        )
        assert response.status_code == 202 and response.json()["status"] == "enqueued"
    code, out, err = serving.last  # type: ignore[attr-defined]
    assert code == 0
    assert "WARNING: --insecure-dev" in err and "UNSIGNED" in err
    assert "GitHub: UNSIGNED" in out and "GitLab: UNSIGNED" in out


def test_the_webhook_table_names_the_variables_and_rejects_typos(tmp_path: Path) -> None:
    config = tmp_path / "reviewq.toml"
    config.write_text('[webhook]\ngithub_secret_env = "MY_HOOK_SECRET"\nmax_body_bytes = 65536\n')
    result = CliRunner().invoke(main, ["--config", str(config), "serve"], env=UNSET)
    assert result.exit_code == 2 and "MY_HOOK_SECRET" in result.output
    config.write_text("[webhook]\nmax_body_byte = 10\n")
    result = CliRunner().invoke(main, ["--config", str(config), "serve"], env=UNSET)
    assert result.exit_code == 2 and "did you mean 'max_body_bytes'?" in result.output


@pytest.mark.slow
def test_workers_share_the_port_and_all_stop_on_sigterm(redis_url: str, unique: str) -> None:
    """`--workers 2`: two server processes answer on one port; SIGTERM to the parent
    stops both gracefully and the parent exits 0."""
    env = {"GITHUB_WEBHOOK_SECRET": SECRET}
    with serving(redis_url, f"serve-{unique}", env, "--workers", "2") as url:
        for n in range(1, 21):
            body = json.dumps(gh_pr(number=n)).encode()
            headers = {
                "Content-Type": "application/json",
                "X-GitHub-Event": "pull_request",
                "X-GitHub-Delivery": f"{unique}-{n}",
                "X-Hub-Signature-256": sign(SECRET.encode(), body),
            }
            # A fresh connection each time, so the kernel spreads them over both.
            response = httpx.post(url + "/webhooks/github", content=body, headers=headers)
            assert response.status_code == 202, response.text
    code, _, err = serving.last  # type: ignore[attr-defined]
    assert code == 0, err
    assert err.count("Finished server process") == 2
    pids = {int(p) for p in re.findall(r"Finished server process \[(\d+)\]", err)}
    assert len(pids) == 2
