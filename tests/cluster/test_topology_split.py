"""What runs on a Redis Cluster and what does not, and the split that works.

- The limiter (and the per-account circuit) runs on the cluster: every key of an
  account shares the `{account}` hash tag (see test_limiter_cluster.py).
- RQ 3 enqueues on the cluster when `RQ_KEY_PREFIX` holds a hash tag, but its worker
  does not take a `RedisCluster` connection (rq/rq#2021: `Worker._set_connection` reads
  `connection.connection_pool`, which a cluster client has not).
- Admission is not cluster-safe: one transaction WATCHes a PR's keys and writes shared
  ZSETs (`P:timed`, `P:running`, `P:line:<account>`) and RQ's queue, none hash-tagged,
  so they live in different slots (and nodes).

So the supported topology is RQ and admission on one Redis primary (replicas and
Sentinel for failover), and the limiter anywhere, a Cluster included. The last test
runs that split: a job on a single-server RQ acquires through a route whose limiters
and circuit live on the cluster.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_py
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException
from rq import Queue, SimpleWorker

from scheduler.config import Settings
from scheduler.quota.limiter import Limiter
from scheduler.quota.plans import Account, Plan, Window
from scheduler.state.keys import Keys
from scheduler.state.txn import run_txn
from workers.providers.failover import Choice, NoAccount, build_route, choose

from . import cluster_support
from .cluster_support import RQ_PREFIX, ClusterHandle


def test_rq_enqueues_on_the_cluster_but_its_worker_does_not_run(
    redis_cluster: ClusterHandle,
) -> None:
    env = {**os.environ, "RQ_KEY_PREFIX": RQ_PREFIX}
    done = subprocess.run(
        [sys.executable, cluster_support.__file__, "rq-on-cluster", redis_cluster.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(k.startswith(RQ_PREFIX) for k in found["keys"]), found
    assert len(found["slots"]) == 1 and found["queued"] == 1, found
    # If this fails, RQ's worker runs on a cluster now: revisit the documented topology.
    assert found["worker_error"] is not None, "RQ's worker ran on the cluster"
    assert "connection_pool" in found["worker_error"], found["worker_error"]


def test_admission_transactions_span_slots(redis_cluster: ClusterHandle) -> None:
    keys = Keys("reviewq")
    pr = "gh:owner/repo#1"
    one_txn = [keys.meta(pr), keys.msgs(pr), keys.backlog(pr), keys.timed, keys.running]
    one_txn += [keys.line("main"), "rq:queue:reviewq"]
    assert len({key_slot(k.encode()) for k in one_txn}) > 1
    assert len({redis_cluster.node_of(k) for k in one_txn}) > 1
    # As the code stands: its pipeline is not transactional on a cluster client...
    with pytest.raises(RedisClusterException, match="transactional context"):
        run_txn(redis_cluster.client, keys, pr, lambda txn: None)
    # ...and a transactional one refuses WATCH over slots.
    with (
        redis_cluster.client.pipeline(transaction=True) as pipe,
        pytest.raises((RedisClusterException, redis_py.RedisError), match=r"(?i)slot"),
    ):
        pipe.watch(keys.meta(pr), keys.msgs(pr), keys.backlog(pr))


# -------------------------------------------------- the split: RQ here, limiter there


def _plan(limit: int) -> Plan:
    return Plan(
        name="split",
        provider="synthetic",
        windows=(Window(name="requests", limit=limit, duration="1h"),),
        source="tests/cluster",
        as_of=dt.date(2026, 12, 1),
    )


def _settings(names: list[str], limit: int) -> Settings:
    accounts = [
        Account(
            name=n,
            provider="synthetic",
            base_url="http://127.0.0.1:9/v1",
            api_key_env="REVIEWQ_SPLIT_KEY",
            plan=_plan(limit),
        )
        for n in names
    ]
    return Settings(accounts=accounts)


def acquire_job(
    cluster_url: str, names: list[str], limit: int, pr: str, rid: str
) -> dict[str, Any]:
    """An RQ job that takes budget as a review job does: a route (limiters and circuit)
    over the accounts, built on the limiter's Redis, here the cluster."""
    cluster = RedisCluster.from_url(cluster_url)
    try:
        # A key is set (never used: no call is made), else the route parks the account.
        route = build_route(_settings(names, limit), cluster, env={"REVIEWQ_SPLIT_KEY": "k"})
        got = choose(route, lambda a: {"requests": 1000}, pr=pr, request_id=rid, model="m")
        if isinstance(got, Choice):
            got.entry.limiter.release(got.grant.lease_id)
            return {"account": got.entry.name, "granted": True}
        assert isinstance(got, NoAccount)
        return {"account": got.account, "granted": False, "reason": got.reason}
    finally:
        cluster.close()


@pytest.fixture
def single(redis_url: str) -> Iterator[redis_py.Redis]:
    """The session's single Redis server: RQ's and admission's."""
    client = redis_py.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


def test_rq_on_one_server_acquires_through_the_cluster(
    single: redis_py.Redis, redis_cluster: ClusterHandle, unique: str
) -> None:
    names = [f"{unique}-main", f"{unique}-spare"]
    queue = Queue(f"split-{unique}", connection=single)
    jobs = [
        queue.enqueue(acquire_job, redis_cluster.url, names, 2, "pr-1", f"r{i}", result_ttl=60)
        for i in range(5)
    ]
    try:
        SimpleWorker([queue], connection=single).work(burst=True)
        results = [job.return_value(refresh=True) for job in jobs]
        # main's budget first, then the fallback's; then nothing until the window frees.
        assert [r["account"] for r in results[:4]] == [names[0]] * 2 + [names[1]] * 2
        assert [r["granted"] for r in results] == [True] * 4 + [False]
        assert "window" in results[4]["reason"], results[4]
        for name in names:  # the budget lives on the cluster, not next to RQ
            limiter = Limiter(redis_cluster.client, name, _plan(2))
            assert limiter.status().windows[0].used == 2000
            assert not any(single.exists(k) for k in limiter.keys)
    finally:
        for job in jobs:
            job.delete()
        queue.delete(delete_jobs=True)
