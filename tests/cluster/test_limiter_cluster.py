"""The limiter's own tests, unchanged, against a 3-primary Redis Cluster.

The test functions of `test_limiter.py`, `test_limiter_property.py` and
`test_limiter_stress.py` are imported as they are and collected again here, where the
`redis` fixture is a `RedisCluster` client and `redis_url` the cluster's startup URL.
The stress tests' worker processes build their clients with `redis_py.Redis.from_url`;
here that module attribute is swapped for `RedisCluster.from_url` (forked children
inherit it), so they talk to the cluster the way a worker would.

The reference-model run takes 600 examples on one server; here it takes
`CLUSTER_EXAMPLES` (CI-sized); the soak takes 600 x REVIEWQ_SOAK examples of 80 steps
and must reach every path (about 100 s per 600 examples on 2 cores):
    REVIEWQ_SOAK=5 pytest tests/cluster/test_limiter_cluster.py -m slow --timeout 0 -s
"""

from __future__ import annotations

import bisect
import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import test_limiter
import test_limiter_property as prop
import test_limiter_stress as stress
from redis.cluster import RedisCluster
from redis.crc import key_slot

from scheduler.quota.limiter import Grant, Limiter
from scheduler.quota.plans import Window

from .cluster_support import ClusterHandle

# Collected again here, against the cluster (the fixture `make` comes along).
make = test_limiter.make
_REUSED = {
    name: fn
    for module in (test_limiter, prop, stress)
    for name, fn in vars(module).items()
    if name.startswith("test_")
    and callable(fn)
    # The model run and its soak get cluster-sized example counts below.
    and name not in {"test_limiter_matches_model", "test_limiter_matches_model_soak"}
}
globals().update(_REUSED)

SOAK = prop.SOAK
CLUSTER_EXAMPLES = 150


@pytest.fixture(name="redis")
def cluster_client(redis_cluster: ClusterHandle) -> RedisCluster:
    """The session's cluster client: the reused tests' `redis`."""
    return redis_cluster.client


@pytest.fixture
def redis_url(redis_cluster: ClusterHandle) -> str:
    """The cluster's startup URL: the reused stress tests' `redis_url`."""
    return redis_cluster.url


@pytest.fixture(autouse=True)
def cluster_clients_in_workers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The stress tests' processes build `redis_py.Redis.from_url(url)`: a cluster
    client instead (forked children inherit the patched module attribute)."""
    shim = SimpleNamespace(Redis=SimpleNamespace(from_url=RedisCluster.from_url))
    monkeypatch.setattr(stress, "redis_py", shim)
    yield


def test_reused_tests_are_collected() -> None:
    """A rename upstream must not silently drop a test from the cluster run."""
    for name in (
        "test_retry_at_exactly_retry_after_succeeds",
        "test_a_denial_is_never_charged",
        "test_eight_processes_never_exceed_one_window",
        "test_eight_processes_never_exceed_either_of_two_windows",
        "test_sigkilled_holder_loses_its_slot_at_the_deadline_not_sooner",
        "test_scripts_survive_a_script_cache_flush",
        "test_keys_share_one_slot_and_all_expire",
    ):
        assert name in _REUSED, name
    assert len(_REUSED) >= 29


def test_limiter_matches_model_on_cluster(redis: RedisCluster) -> None:
    """The reference-model state machine (`LimiterMachine`), CI-sized."""
    seen = prop.run_machine(redis, examples=CLUSTER_EXAMPLES, steps=50)
    assert seen["granted"] and seen["denied: window"] and seen["settle -> True"]


@pytest.mark.slow
@pytest.mark.skipif(not SOAK, reason="soak: set REVIEWQ_SOAK=<factor> to run")
def test_limiter_matches_model_on_cluster_soak(redis: RedisCluster) -> None:
    examples = 600 * SOAK
    prop.assert_reached_every_path(prop.run_machine(redis, examples=examples, steps=80), examples)


# ------------------------------------------------------------- slots and spreading


def _one_account_per_node(handle: ClusterHandle) -> dict[str, str]:
    """An account name whose keys land on each primary: name -> node."""
    chosen: dict[str, str] = {}
    while len(chosen) < len(handle.nodes):
        name = "acct" + uuid.uuid4().hex[:8]
        node = handle.node_of(f"reviewq:{{{name}}}:state")
        if node not in chosen.values():
            chosen[name] = node
    return chosen


def test_an_accounts_keys_share_one_slot_and_accounts_spread_over_nodes(
    redis_cluster: ClusterHandle,
) -> None:
    plan = stress.make_plan((Window(name="w", limit=5, duration="10s"),), concurrency=2)
    nodes_used = set()
    for i in range(30):
        limiter = Limiter(redis_cluster.client, f"spread{i}-{uuid.uuid4().hex[:6]}", plan)
        assert isinstance(limiter.acquire(1000, "pr", "r", 1000), Grant)
        assert len({key_slot(k.encode()) for k in limiter.keys}) == 1
        owners = {redis_cluster.node_of(k) for k in limiter.keys}
        assert len(owners) == 1
        assert all(redis_cluster.client.exists(k) for k in limiter.keys)
        nodes_used |= owners
    assert len(nodes_used) == len(redis_cluster.nodes), nodes_used


def test_noscript_on_one_primary_reloads_the_scripts(redis_cluster: ClusterHandle) -> None:
    """A flushed (or newly promoted) primary answers NOSCRIPT: the limiter loads the
    script again and retries, on whichever node owns the account."""
    client = redis_cluster.client
    plan = stress.make_plan((Window(name="w", limit=5, duration="10s"),))
    limiter = Limiter(client, "ns" + uuid.uuid4().hex[:8], plan)
    assert isinstance(limiter.acquire(1000, "pr", "a", 1000), Grant)
    node = client.get_node_from_key(limiter.keys[0])
    assert node is not None
    owner = client.get_redis_connection(node)  # that primary alone
    owner.script_flush()
    assert owner.script_exists(limiter._scripts["acquire"].sha) == [False]
    assert isinstance(limiter.acquire(1000, "pr", "b", 1000), Grant)
    assert limiter.status().windows[0].used == 2000
    owner.script_flush()
    assert limiter.renew(limiter.lease_id("b"), 1000)  # the Script.__call__ path too


def test_accounts_on_every_node_at_once_each_hold_their_own_limit(
    redis_cluster: ClusterHandle,
) -> None:
    """One account per primary, hammered at the same time by processes of its own
    (the stress test's `hammer`): each account's sliding window holds exactly,
    whichever node serves it."""
    accounts = _one_account_per_node(redis_cluster)
    plan = stress.make_plan((Window(name="w", limit=20, duration="1s"),))
    outs = {a: stress.CTX.Queue() for a in accounts}
    procs = [
        stress.CTX.Process(target=stress.hammer, args=(redis_cluster.url, a, plan, 3.0, outs[a]))
        for a in accounts
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    results = {a: [out.get(timeout=60) for _ in range(2)] for a, out in outs.items()}
    for p in procs:
        p.join(timeout=10)
        assert p.exitcode == 0
    assert len(set(accounts.values())) == len(redis_cluster.nodes)
    for account, reports in results.items():
        times = sorted(t for grants, _ in reports for t in grants)
        denied = sorted(t for _, denials in reports for t in denials)
        assert all(denials for _, denials in reports), "each process meets the limit"
        assert stress.max_in_any_window(times, 1000) == 20, account
        # No budget wasted, on Redis's clock: every denial met a full window.
        for t in denied:
            full = bisect.bisect_right(times, t) - bisect.bisect_right(times, t - 1000)
            assert full == 20, (account, t)
