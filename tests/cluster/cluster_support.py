"""Private Redis topologies for tests: a 3-primary Cluster, and a Sentinel-watched
primary with one replica. Every process is ours, stopped by its pid.

Three redis-server processes (LocalRedis, so each is stopped by its pid and owns a temp
dir) with cluster mode on, joined by `redis-cli --cluster create` with no replicas.
Each node gets its own bus port (`--cluster-port`), so a port near 65535 never turns
into an invalid `port + 10000`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as redis_py
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.sentinel import Sentinel

from scheduler.sandbox.localredis import LocalRedis, RedisServerStartError, free_port


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
    buses = []
    for i, port in enumerate(ports):
        last = 16383 if i == len(ports) - 1 else (i + 1) * step - 1
        with redis_py.Redis(host="127.0.0.1", port=port, decode_responses=True) as client:
            client.execute_command("CLUSTER ADDSLOTSRANGE", i * step, last)
            client.execute_command("CLUSTER SET-CONFIG-EPOCH", i + 1)
            buses.append(int(client.config_get("cluster-port")["cluster-port"]))
    with redis_py.Redis(host="127.0.0.1", port=ports[0]) as first:
        for port, bus in zip(ports[1:], buses[1:], strict=True):
            # The bus port too: ours is not the default port + 10000.
            first.execute_command("CLUSTER MEET", "127.0.0.1", port, bus)


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


# ------------------------------------------------------------------ Sentinel


SERVICE = "reviewq"


@dataclass
class SentinelTopology:
    """A primary, its replica and `sentinels` Sentinel processes watching them."""

    primary: LocalRedis
    replica: LocalRedis
    sentinel_ports: list[int]
    sentinel_procs: list[subprocess.Popen[bytes]]
    directory: Path
    service: str = SERVICE

    @staticmethod
    def port(server: LocalRedis) -> int:
        return int(server.url.rsplit(":", 1)[1])

    def sentinel_log(self) -> str:
        """Every Sentinel's log: `+switch-master` lines are failovers."""
        return "\n".join(p.read_text() for p in sorted(self.directory.glob("sentinel-*.log")))

    def switches(self) -> int:
        """Failovers so far, as the first Sentinel logged them. A switch before the
        test killed anything would mean a Sentinel judged a live primary down."""
        logs = sorted(self.directory.glob("sentinel-*.log"))
        return logs[0].read_text().count("+switch-master") if logs else 0

    def sentinel(self, **kwargs: object) -> Sentinel:
        return Sentinel([("127.0.0.1", p) for p in self.sentinel_ports], **kwargs)

    def master_port(self) -> int | None:
        """The primary the Sentinels name now (None while they disagree or fail)."""
        ports = set()
        for p in self.sentinel_ports:
            with redis_py.Redis(host="127.0.0.1", port=p, socket_timeout=1) as s:
                addr = s.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", self.service)
            ports.add(int(addr[1]) if addr else None)
        return ports.pop() if len(ports) == 1 else None

    def wait_for_promotion(self, timeout: float = 30.0) -> float:
        """Seconds until every Sentinel names the replica and it says role:master."""
        start = time.monotonic()
        want = self.port(self.replica)
        while time.monotonic() - start < timeout:
            if self.master_port() == want and _role(want) == "master":
                return time.monotonic() - start
            time.sleep(0.02)
        raise RuntimeError(f"no promotion within {timeout:g}s; sentinel says {self.master_port()}")


def _role(port: int) -> str | None:
    try:
        with redis_py.Redis(host="127.0.0.1", port=port, socket_timeout=1) as client:
            return str(client.info("replication")["role"])
    except redis_py.RedisError:
        return None


def _wait(what: str, check: Callable[[], bool], timeout: float = _READY_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(redis_py.RedisError):
            if check():
                return
        time.sleep(0.02)
    raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")


def _start_sentinel(
    binary: str, directory: Path, primary_port: int, down_after_ms: int
) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    conf = directory / f"sentinel-{port}.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
        f"logfile {directory / f'sentinel-{port}.log'}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} 1\n"
        f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
        f"sentinel failover-timeout {SERVICE} 3000\n"
        f"sentinel parallel-syncs {SERVICE} 1\n"
    )
    proc = subprocess.Popen(
        [binary, str(conf), "--sentinel"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return port, proc


def _stop_pid(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def _relay_link(down: socket.socket, upstream: int, delay_s: float) -> None:
    """One replication connection: replica -> primary as is; primary -> replica held
    `delay_s`, and whatever is held when the primary's side closes is dropped."""
    try:
        up = socket.create_connection(("127.0.0.1", upstream))
    except OSError:
        down.close()
        return
    held: deque[tuple[float, bytes]] = deque()
    cond = threading.Condition()
    is_open = [True]

    def upward() -> None:
        with suppress(OSError):
            while data := down.recv(65536):
                up.sendall(data)
        with suppress(OSError):
            up.shutdown(socket.SHUT_RDWR)

    def downward() -> None:
        while True:
            with cond:
                while is_open[0] and not held:
                    cond.wait()
                if not is_open[0]:
                    break
                due, data = held[0]
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
                continue
            with cond:
                if not is_open[0]:
                    break
                held.popleft()
            try:
                down.sendall(data)
            except OSError:
                break
        down.close()

    threading.Thread(target=upward, daemon=True).start()
    threading.Thread(target=downward, daemon=True).start()
    with suppress(OSError):
        while data := up.recv(65536):
            with cond:
                held.append((time.monotonic() + delay_s, data))
                cond.notify()
    with cond:  # the primary is gone: what it sent and the replica has not seen is lost
        is_open[0] = False
        held.clear()
        cond.notify()


def relay(upstream: int, delay_ms: int) -> None:
    """A TCP relay that delays the replication stream by `delay_ms`: the replication
    lag of a replica across a network, made visible. Prints its port, then serves."""
    server = socket.create_server(("127.0.0.1", 0))
    print(server.getsockname()[1], flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(
            target=_relay_link, args=(conn, upstream, delay_ms / 1000), daemon=True
        ).start()


def _start_relay(upstream: int, delay_ms: int) -> tuple[int, subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "relay", str(upstream), str(delay_ms)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip():
        _stop_pid(proc)
        raise RuntimeError("the replication relay did not start")
    return int(line), proc


@contextmanager
def start_sentinel_topology(
    binary: str, *, sentinels: int = 1, down_after_ms: int = 400, lag_ms: int = 0
) -> Iterator[SentinelTopology]:
    """Primary + replica + Sentinels (quorum 1), ready: the replica is in sync and every
    Sentinel knows it. With `lag_ms`, the replica reads the primary through a relay
    that holds the stream back that long (and drops it when the primary dies). Every
    process is stopped by its pid on exit."""
    # Redis 7 waits 5 s before a diskless full sync, for more replicas to join.
    primary = LocalRedis(
        binary=binary, port=free_port(), extra_args=["--repl-diskless-sync-delay", "0"]
    )
    replica: LocalRedis | None = None
    procs: list[subprocess.Popen[bytes]] = []
    directory = Path(tempfile.mkdtemp(prefix="reviewq-sentinel-"))
    try:
        primary.start()
        p_port = SentinelTopology.port(primary)
        source = p_port
        if lag_ms:
            source, proc = _start_relay(p_port, lag_ms)
            procs.append(proc)
        replica = LocalRedis(
            binary=binary, port=free_port(), extra_args=["--replicaof", "127.0.0.1", str(source)]
        )
        replica.start()
        r_port = SentinelTopology.port(replica)

        def in_sync() -> bool:
            """A write the replica acknowledged. `master_link_status:up` is not enough:
            after a diskless full sync the primary streams nothing more until the
            replica's first REPLCONF ACK (up to a second later), so a crash in that
            second would lose every write since the sync."""
            with redis_py.Redis(host="127.0.0.1", port=p_port, socket_timeout=2) as c:
                c.set("reviewq:test:replication-probe", "1")
                return int(c.execute_command("WAIT", 1, 200)) >= 1

        _wait("the replica to acknowledge a write", in_sync)
        ports = []
        for _ in range(sentinels):
            port, proc = _start_sentinel(binary, directory, p_port, down_after_ms)
            procs.append(proc)
            ports.append(port)
        topo = SentinelTopology(primary, replica, ports, procs, directory)

        def knows_replica() -> bool:
            for port in ports:
                with redis_py.Redis(host="127.0.0.1", port=port, socket_timeout=1) as s:
                    found = s.sentinel_slaves(SERVICE)
                    others = s.sentinel_sentinels(SERVICE)
                if not any(int(r["port"]) == r_port for r in found):
                    return False
                if len(others) != sentinels - 1:
                    return False
            return topo.master_port() == p_port

        _wait("every Sentinel to know the replica (and each other)", knows_replica)
        yield topo
    finally:
        for proc in procs:
            _stop_pid(proc)
        if replica is not None:
            replica.stop()
        primary.stop()
        shutil.rmtree(directory, ignore_errors=True)


# ------------------------------------------------------------------ RQ


RQ_PREFIX = "{rq}"


def _rq_on_cluster(url: str) -> dict[str, Any]:
    """Enqueue and work one job on the cluster; run in a child whose RQ_KEY_PREFIX
    is `{rq}`. Prints what it found as JSON."""
    from rq import Queue, SimpleWorker  # here: RQ reads RQ_KEY_PREFIX when imported

    client = RedisCluster.from_url(url)
    queue = Queue("probe-" + uuid.uuid4().hex[:6], connection=client)
    job = queue.enqueue("builtins.len", "abcd")
    keys = [queue.key, job.key, f"{RQ_PREFIX}:queues"]
    found: dict[str, Any] = {
        "keys": keys,
        "slots": sorted({key_slot(k.encode()) for k in keys}),
        "queued": queue.count,
        "worker_error": None,
    }
    try:
        SimpleWorker([queue], connection=client).work(burst=True)
    except Exception as exc:
        found["worker_error"] = f"{type(exc).__name__}: {exc}"
    queue.empty()
    return found


if __name__ == "__main__" and sys.argv[1:2] == ["relay"]:
    relay(int(sys.argv[2]), int(sys.argv[3]))
if __name__ == "__main__" and sys.argv[1:2] == ["rq-on-cluster"]:
    print(json.dumps(_rq_on_cluster(sys.argv[2])))
