"""`reviewq inspect`: what it shows, that it never writes, and its error paths.

State is seeded through the real code paths (intake, admission, the limiter, the
circuit) on a real Redis. The read-only test runs on a private server, so the whole
keyspace (and Redis's own count of writes) is ours to compare.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
import redis as redis_py
from operator_fixtures import enqueue_local, finish, invoke, submit, take, write_config

from scheduler.config import load_settings
from scheduler.ops.deployment import LIMITER_PREFIX, Deployment, connect, deployment_prefix
from scheduler.ops.inspection import estimate_eta, redis_now_ms
from scheduler.ops.snapshots import AccountView, CircuitView, WindowView
from scheduler.quota.circuit import Circuit
from scheduler.quota.limiter import Grant, Limiter
from scheduler.state.records import MessageState, PrMeta, PrView
from workers.runtime import runtime_spec

if TYPE_CHECKING:  # a type only: more than one test folder has a conftest module
    from conftest import LocalRedisFactory


@dataclass
class Seeded:
    config: Path
    dep: Deployment
    main: str
    other: str
    planning: str
    active: str


def seed(tmp_path: Path, url: str, unique: str) -> Seeded:
    """Two PRs: one still planning; one with a message done, one waiting in the main
    account's line, one queued and one pending. Main holds a lease; the fallback is
    blocked by its provider and out of service (circuit open)."""
    main, other = f"synth-{unique}", f"zai-{unique}"
    config = write_config(tmp_path, url, f"q-{unique}", [(main, "synthetic"), (other, "zai-pro")])
    settings = load_settings(config)
    dep = connect(settings)
    adm = dep.admission
    enqueue_local(adm, f"{unique}/plan#1")
    ref = enqueue_local(adm, f"{unique}/busy#2", text="diff --git a/x b/x\n")
    submit(adm, ref, 4)
    limiter = Limiter(dep.redis, settings.account(main), key_prefix=LIMITER_PREFIX)
    other_limiter = Limiter(dep.redis, settings.account(other), key_prefix=LIMITER_PREFIX)
    member, dispatch = take(adm)
    grant = limiter.acquire(1000, ref.id, f"{member}.r0", 60_000)
    assert isinstance(grant, Grant)
    adm.note_started(member)
    limiter.release(grant.lease_id)
    finish(adm, member, dispatch, ok=True, account=main)
    member, dispatch = take(adm)
    assert isinstance(limiter.acquire(1000, ref.id, "elsewhere.r0", 60_000), Grant)
    now = adm.now_ms()
    adm.park(member, dispatch, until_ms=now + 60_000, reason="concurrency", line=main)
    other_limiter.block(now + 600_000, "429: provider says wait")
    Circuit(dep.redis, key_prefix=LIMITER_PREFIX).open(other, "1313", "fair-use restriction")
    return Seeded(config, dep, main, other, f"{unique}/plan#1", ref.id)


def keyspace(client: redis_py.Redis) -> dict[bytes, tuple[Any, Any, int]]:
    """Every key: its type, its serialized value and its TTL."""
    return {
        key: (client.type(key), client.dump(key), cast(int, client.pttl(key)))
        for key in client.scan_iter(count=1000)
    }


def writes(client: redis_py.Redis) -> int:
    """Redis's own count of changes to the dataset (it counts even with saving off)."""
    return int(cast(dict[str, Any], client.info("persistence"))["rdb_changes_since_last_save"])


def test_inspect_changes_nothing_in_redis(
    tmp_path: Path, local_redis_factory: LocalRedisFactory, unique: str
) -> None:
    server = local_redis_factory()
    seeded = seed(tmp_path, server.url, unique)
    client = redis_py.Redis.from_url(server.url)
    before, writes_before = keyspace(client), writes(client)
    assert len(before) > 10
    for args in (
        ["inspect"],
        ["inspect", "--json"],
        ["inspect", "--pr", seeded.active],
        ["inspect", "--json", "--pr", seeded.planning, "--limit", "1"],
        ["inspect", "--watch", "--interval", "0.2", "--refreshes", "2"],
    ):
        result = invoke(seeded.config, *args)
        assert result.exit_code == 0, (args, result.output)
    after = keyspace(client)
    assert writes(client) == writes_before
    assert after.keys() == before.keys()
    for key, (kind, value, ttl) in before.items():
        kind2, value2, ttl2 = after[key]
        assert (kind2, value2) == (kind, value), key
        assert (ttl2 < 0) == (ttl < 0) and 0 <= ttl - ttl2 < 30_000, key
    client.close()
    seeded.dep.close()


def test_inspect_json_reports_queues_budgets_and_prs(
    tmp_path: Path, redis_url: str, unique: str
) -> None:
    seeded = seed(tmp_path, redis_url, unique)
    result = invoke(seeded.config, "inspect", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["prefix"] == f"reviewq:q-{unique}"
    queues = data["queues"]
    assert queues["waiting_for_budget"] == {seeded.main: 1, seeded.other: 0}
    # the two plan jobs and the one review job still on the queue
    assert (queues["queued"], queues["failed"], queues["timed"], queues["running"]) == (3, 0, 0, 0)
    main, other = data["accounts"]
    (window,) = main["windows"]
    assert (window["used_milli"], window["limit_milli"]) == (2000, 500_000)
    assert window["percent"] == 0.4 and window["free_milli"] == 498_000
    assert window["next_free_in_ms"] > 5 * 3_600_000 - 60_000
    assert main["in_use"] == 1 and main["leases"][0]["expires_in_ms"] > 50_000
    assert main["block"] is None and main["circuit"] is None
    assert other["block"]["reason"] == "429: provider says wait"
    assert 590_000 < other["block"]["in_ms"] <= 600_000
    assert other["circuit"]["code"] == "1313" and other["circuit"]["expires_in_ms"] is None
    busy, planning = data["prs"]  # most recent arrival first
    assert (busy["pr"], planning["pr"]) == (seeded.active, seeded.planning)
    counts = busy["messages"]
    assert counts == {
        "total": 4, "done": 1, "failed": 0, "cancelled": 0,
        "waiting": 1, "running": 0, "queued": 1, "pending": 1,
    }  # fmt: skip
    assert busy["cost_used_milli"] == {seeded.main: {"requests_5h": 1000}}
    assert busy["eta"]["kind"] == "estimate" and busy["eta"]["at_ms"] >= data["now_ms"]
    assert planning["eta"] == {
        "kind": "unknown", "at_ms": None, "in_ms": None,
        "reason": "not planned yet: its files are still being listed",
    }  # fmt: skip
    assert data["typical_call_ms"] is not None and busy["detail"] is None
    seeded.dep.close()


def test_inspect_tables_and_one_pr_in_detail(tmp_path: Path, redis_url: str, unique: str) -> None:
    seeded = seed(tmp_path, redis_url, unique)
    result = invoke(seeded.config, "inspect", "--pr", seeded.active, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "OUT OF SERVICE (1313): fair-use restriction" in out
    assert "429: provider says wait" in out and "2 requests / 500 requests" in out
    assert f"Messages of {seeded.active}" in out and "concurrency" in out
    assert "1 / 4 (1 waiting)" in out and seeded.planning not in out
    data = json.loads(invoke(seeded.config, "inspect", "--json", "--pr", seeded.active).output)
    assert [m["status"] for m in data["prs"][0]["detail"]] == [
        "done", "waiting", "queued", "pending"
    ]  # fmt: skip
    seeded.dep.close()


def test_inspect_error_paths(tmp_path: Path, redis_url: str, unique: str) -> None:
    config = write_config(tmp_path, redis_url, f"q-{unique}")
    unknown = invoke(config, "inspect", "--pr", "nobody/none#9")
    assert unknown.exit_code == 1 and "unknown PR 'nobody/none#9'" in unknown.output
    bad = invoke(config, "inspect", "--pr", "has space")
    assert bad.exit_code == 2 and "is not a PR" in bad.output
    both = invoke(config, "inspect", "--json", "--watch")
    assert both.exit_code == 2 and "do not mix" in both.output
    empty = invoke(config, "inspect")
    assert empty.exit_code == 0 and "no accounts configured" in empty.output


def test_unreachable_redis_names_the_url_redacted_and_exits_3(tmp_path: Path) -> None:
    config = write_config(tmp_path, "redis://:s3cret-pw@127.0.0.1:1/0", "q")
    for args in (["inspect"], ["results", "o/r#1"], ["cancel", "o/r#1"], ["retry-failed"]):
        result = invoke(config, *args)
        assert result.exit_code == 3, (args, result.output)
        assert "Redis unreachable at redis://:****@127.0.0.1:1/0" in result.output
        assert "apt-get install redis-server" in result.output and "REDIS_URL" in result.output
        assert "s3cret" not in result.output


def test_the_prefix_is_the_one_workers_use(tmp_path: Path, redis_url: str, unique: str) -> None:
    config = write_config(tmp_path, redis_url, f"q-{unique}", [("a", "synthetic")])
    settings = load_settings(config)
    spec = runtime_spec(settings)
    assert deployment_prefix(settings) == spec.prefix and spec.limiter_prefix == LIMITER_PREFIX


# --- the ETA, on hand-made state ------------------------------------------------------


def _account(free: int, next_free: int | None, *, concurrency: int = 2) -> AccountView:
    window = WindowView(
        name="requests_5h", kind="rolling", unit="requests", used_milli=10_000 - free,
        limit_milli=10_000, spendable_milli=10_000, free_milli=free, percent=0.0,
        next_free_at_ms=next_free, next_free_in_ms=None,
    )  # fmt: skip
    return AccountView(
        name="a", provider="synthetic", plan="p", concurrency=concurrency, in_use=0,
        leases=[], block=None, circuit=None, windows=[window],
    )  # fmt: skip


def _view(status: str, left: int, done: int = 1) -> PrView:
    total = left + done
    meta = PrMeta.model_validate(
        {"pr": "o/r#1", "gen": 1, "status": status, "total": total,
         "estimate": {"requests_5h": 1000 * total}}
    )  # fmt: skip
    messages = {
        f"1.{n}": MessageState(gen=1, status="done" if n < done else "pending")
        for n in range(total)
    }
    return PrView(meta=meta, messages=messages)


@pytest.mark.parametrize(
    ("view", "account", "call_ms", "expect"),
    [
        # 5 left, 2 at a time (cap 2, concurrency 2): 3 rounds of 1 s
        (_view("active", 5), _account(9_000, None), 1000, ("estimate", 3000)),
        # needs 5,000, 4,000 free: not before the window's next unit frees
        (_view("active", 5), _account(4_000, 1_000 + 7_000), 1000, ("not_before", 7000)),
        (_view("active", 5), _account(9_000, None), None, ("unknown", None)),
        (_view("planning", 0, 0), _account(9_000, None), 1000, ("unknown", None)),
        (_view("done", 0), _account(9_000, None), 1000, ("finished", 0)),
    ],
)
def test_eta_method(
    view: PrView, account: AccountView, call_ms: int | None, expect: tuple[str, int | None]
) -> None:
    eta = estimate_eta(view, 1_000, account, call_ms, per_pr_cap=2)
    assert (eta.kind, eta.in_ms) == expect, eta


def test_eta_is_unknown_while_the_main_account_is_out_of_service() -> None:
    account = _account(9_000, None)
    account.circuit = CircuitView(
        code="1313", message="fair use", opened_at_ms=0, expires_in_ms=None
    )
    eta = estimate_eta(_view("active", 2), 1_000, account, 500, per_pr_cap=2)
    assert eta.kind == "unknown" and "fair use" in eta.reason


def test_redis_now_is_redis_time(redis: redis_py.Redis) -> None:
    sec, usec = cast(tuple[int, int], redis.time())
    assert abs(redis_now_ms(redis) - (sec * 1000 + usec // 1000)) < 1000
