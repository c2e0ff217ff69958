"""A private 3-primary Redis Cluster: start, join, wait, and look inside.

Three redis-server processes (LocalRedis, so each is stopped by its pid and owns a temp
dir) with cluster mode on, joined by `redis-cli --cluster create` with no replicas.
Each node gets its own bus port (`--cluster-port`), so a port near 65535 never turns
into an invalid `port + 10000`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis as redis_py
from redis.cluster import ClusterNode, RedisCluster

from scheduler.localredis import LocalRedis, RedisServerStartError, free_port


class NoClusterSupport(RuntimeError):
    """This server binary cannot run in cluster mode."""


PRIMARIES = 3
_READY_S = 20.0


@dataclass
class ClusterHandle:
    """The running cluster: a client, the URL it was built from, and the nodes."""

    client: RedisCluster
    url: str
    nodes: list[LocalRedis] = field(default_factory=list)

    @property
    def ports(self) -> list[int]:
        return [int(n.url.rsplit(":", 1)[1]) for n in self.nodes]

    def node_of(self, key: str) -> str:
        """host:port of the primary that owns `key`'s slot."""
        node = self.client.get_node_from_key(key)
        assert node is not None
        return f"{node.host}:{node.port}"

    def client_from_url(self, url: str | None = None, **kwargs: object) -> RedisCluster:
        """A new cluster client (e.g. in a forked process) from the startup URL."""
        return RedisCluster.from_url(url or self.url, **kwargs)


def _cluster_args(bus_port: int) -> list[str]:
    """nodes.conf is relative to each server's own --dir (its private temp dir)."""
    return [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-port",
        str(bus_port),
        "--cluster-node-timeout",
        "2000",
    ]


def _start_nodes(binary: str) -> list[LocalRedis]:
    nodes: list[LocalRedis] = []
    try:
        for _ in range(PRIMARIES):
            node = LocalRedis(
                binary=binary, port=free_port(), extra_args=_cluster_args(free_port())
            )
            nodes.append(node)
            node.start()
    except RedisServerStartError as exc:
        for node in nodes:
            node.stop()
        text = str(exc).lower()
        if "cluster" in text and ("bad directive" in text or "unsupported" in text):
            raise NoClusterSupport(f"{binary} has no Redis Cluster support: {exc}") from exc
        raise
    return nodes


def _cluster_info(port: int) -> dict[str, str]:
    with redis_py.Redis(host="127.0.0.1", port=port, socket_timeout=2) as client:
        info = client.execute_command("CLUSTER INFO")  # redis-py parses it into a dict
    return {str(k): str(v) for k, v in info.items()}


def _create(ports: list[int]) -> None:
    """`redis-cli --cluster create` as the issue asks; without redis-cli (a pip-only
    Valkey), the same layout by hand: slots split in three, then CLUSTER MEET."""
    cli = shutil.which("redis-cli") or shutil.which("valkey-cli")
    if cli:
        cmd = [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)]
        cmd += ["--cluster-replicas", "0", "--cluster-yes"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
        return
    step = 16384 // len(ports)
    for i, port in enumerate(ports):
        last = 16383 if i == len(ports) - 1 else (i + 1) * step - 1
        with redis_py.Redis(host="127.0.0.1", port=port) as client:
            client.execute_command("CLUSTER ADDSLOTSRANGE", i * step, last)
            for other in ports[1:] if i == 0 else ():
                client.execute_command("CLUSTER MEET", "127.0.0.1", other)


def _wait_ok(ports: list[int]) -> None:
    """Every node says cluster_state:ok and knows every other node."""
    deadline = time.monotonic() + _READY_S
    last: dict[int, dict[str, str]] = {}
    while time.monotonic() < deadline:
        last = {p: _cluster_info(p) for p in ports}
        if all(
            i.get("cluster_state") == "ok" and i.get("cluster_known_nodes") == str(len(ports))
            for i in last.values()
        ):
            return
        time.sleep(0.05)
    raise RuntimeError(f"cluster not ok after {_READY_S:g}s: {last}")


@contextmanager
def start_cluster(binary: str) -> Iterator[ClusterHandle]:
    """Start, join and wait for a cluster; every node is stopped by pid on exit, also
    when creating it failed half-way."""
    nodes = _start_nodes(binary)
    client: RedisCluster | None = None
    try:
        ports = [int(n.url.rsplit(":", 1)[1]) for n in nodes]
        _create(ports)
        _wait_ok(ports)
        client = RedisCluster(
            startup_nodes=[ClusterNode("127.0.0.1", p) for p in ports], decode_responses=False
        )
        client.ping(target_nodes=RedisCluster.ALL_NODES)
        yield ClusterHandle(client, f"redis://127.0.0.1:{ports[0]}", nodes)
    finally:
        if client is not None:
            client.close()
        for node in nodes:
            node.stop()
