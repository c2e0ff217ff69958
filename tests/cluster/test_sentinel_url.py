"""A deployment on `redis+sentinel://` follows a failover with no proxy in front.

Real processes against a real primary, replica and Sentinel (tests/cluster's set-up):
`reviewq enqueue`, `reviewq worker --burst` and `reviewq results` review a local diff
through the Sentinel URL; the primary is SIGKILLed, Sentinel promotes the replica, and
the same commands, with the same config, review a second diff on the new primary.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis as redis_py
from click.testing import CliRunner

from scheduler.cli.main import main
from scheduler.quota.plans import get_preset
from scheduler.sandbox import (
    BASE_PATHS,
    DEV_KEY,
    ProviderConfig,
    create_provider_app,
    serve_in_thread,
)
from scheduler.sandbox.localredis import find_server_binary

from .cluster_support import SERVICE, SentinelTopology, start_sentinel_topology

KEY_ENV = "REVIEWQ_SENTINEL_TEST_KEY"
REVIEWQ = (sys.executable, "-c", "from scheduler.cli.main import main; main()")
DIFF = """diff --git a/app.py b/app.py
--- a/app.py
+++ b/app.py
@@ -1,2 +1,3 @@
 import os
+import sys
 print(os.name)
"""


def _config(tmp_path: Path, topo: SentinelTopology, provider_url: str, queue: str) -> Path:
    sentinels = ",".join(f"127.0.0.1:{p}" for p in topo.sentinel_ports)
    path = tmp_path / "reviewq.toml"
    path.write_text(
        f'redis_url = "redis+sentinel://{sentinels}/{SERVICE}/0"\nqueue_name = "{queue}"\n'
        '[[accounts]]\nname = "synth"\nplan = "synthetic"\n'
        f'base_url = "{provider_url}{BASE_PATHS["synthetic"]}"\napi_key_env = "{KEY_ENV}"\n'
        '[review]\nsink = "log"\n'
    )
    return path


def _review(config: Path, tmp_path: Path, pr: str) -> str:
    """Enqueue a diff, work the queue dry in a real `reviewq worker`, read the review."""
    diff = tmp_path / f"{pr}.diff"
    diff.write_text(DIFF.replace("sys", f"sys  # {pr}"))
    env = {"REDIS_URL": "", "REVIEWQ_QUEUE": ""}
    queued = CliRunner().invoke(
        main, ["--config", str(config), "enqueue", "--diff", str(diff), "--pr", pr], env=env
    )
    assert queued.exit_code == 0, queued.output
    done = subprocess.run(
        [*REVIEWQ, "--config", str(config), "worker", "--burst"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**{k: v for k, v in os.environ.items() if k not in env}, KEY_ENV: DEV_KEY},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    shown = CliRunner().invoke(main, ["--config", str(config), "results", pr], env=env)
    assert shown.exit_code == 0, shown.output
    return shown.output


def _until_served(config: Path, timeout: float = 20.0) -> None:
    """Right after a promotion Sentinel may still flag the new primary for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        result = CliRunner().invoke(main, ["--config", str(config), "inspect", "--json"])
        if result.exit_code == 0:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"inspect never reached the new primary: {result.output}")
        time.sleep(0.2)


def test_a_deployment_follows_a_sentinel_failover(tmp_path: Path) -> None:
    queue = "sentinel-url-" + uuid.uuid4().hex[:8]
    plan = get_preset("synthetic")
    sim = create_provider_app(ProviderConfig(flavour="synthetic", plan=plan, seed=3))
    with (
        start_sentinel_topology(find_server_binary()) as topo,
        serve_in_thread(sim) as provider,
    ):
        config = _config(tmp_path, topo, provider.url, queue)
        before = _review(config, tmp_path, "before-failover")
        assert "done (1 done of 1)" in before and "0 failed" in before, before
        first = topo.port(topo.primary)
        topo.primary.kill()
        topo.wait_for_promotion()
        _until_served(config)
        after = _review(config, tmp_path, "after-failover")
        assert "done (1 done of 1)" in after and "0 failed" in after, after
        # The second review lives on the promoted replica, which the URL never named.
        with redis_py.Redis(port=topo.port(topo.replica)) as promoted:
            assert promoted.info("replication")["role"] == "master"
            assert any(b"after-failover" in k for k in promoted.scan_iter(match="*after-failover*"))
        assert topo.port(topo.replica) != first
