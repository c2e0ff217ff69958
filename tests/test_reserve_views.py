"""The adaptive reserve as an operator sees it: `reviewq inspect` (table and JSON) and
`/metrics` show the reserve in force and the demand it was sized from (docs/reserve.md).
State is made by the real parts: config, intake, admission, the waker's controller and
the Lua limiter, on a real Redis."""

from __future__ import annotations

import json
from pathlib import Path

import redis as redis_py
from operator_fixtures import enqueue_local, invoke, submit, write_config
from prometheus_client.parser import text_string_to_metric_families
from webhook_support import OPEN, serve_hook

from scheduler.config import Settings, load_settings
from scheduler.ops.deployment import LIMITER_PREFIX, connect
from scheduler.quota.plans import Account, AdaptiveReserve, Policy, get_preset
from scheduler.waker.reserve import ReserveController

ADAPTIVE = """
[accounts.policy]
pr_share = 0.2
reserve = 0.3
[accounts.policy.adaptive]
floor = 0.02
horizon = "5h"
"""


def test_inspect_shows_the_reserve_in_force_and_why(
    tmp_path: Path, redis_url: str, unique: str
) -> None:
    """synthetic: 500 requests a 5 h window. A 3-message PR estimated at 3 requests is
    a burst of 3 and 3 queued: 3 requests, under the floor (2 % of 500 = 10), so 10 is
    in force. The JSON and the table name the
    demand; an account without `adaptive` shows its fixed 30 %."""
    main, fixed = f"synth-{unique}", f"fixed-{unique}"
    config = write_config(tmp_path, redis_url, f"q-{unique}", [(main, "synthetic")], extra=ADAPTIVE)
    text = config.read_text() + (
        f'[[accounts]]\nname = "{fixed}"\nplan = "synthetic"\napi_key_env = "RQ_TEST_KEY"\n'
        "[accounts.policy]\nreserve = 0.3\n"
    )
    config.write_text(text)
    settings = load_settings(config)
    dep = connect(settings)
    ref = enqueue_local(dep.admission, f"{unique}/small#1")
    submit(dep.admission, ref, 3)
    ctl = ReserveController.for_accounts(
        dep.admission, settings.accounts, key_prefix=LIMITER_PREFIX
    )
    assert ctl is not None and [lim.account for lim in ctl.limiters] == [main]
    ctl.step(dep.admission.now_ms())
    data = json.loads(invoke(config, "inspect", "--json").output)
    adaptive, plain = (
        {a["name"]: a for a in data["accounts"]}[n]["windows"][0] for n in (main, fixed)
    )
    assert adaptive["reserve_adaptive"] is True and adaptive["reserve_milli"] == 10_000
    assert adaptive["reserve_demand"] == {"recent": 3_000, "queued": 3_000, "lent": 0, "leaving": 0}
    assert plain["reserve_adaptive"] is False and plain["reserve_milli"] == 150_000
    assert plain["reserve_demand"] is None
    table = invoke(config, "inspect", env={"COLUMNS": "220"}).output
    assert "adaptive: burst 3, queued 3" in table and "150 requests (fixed)" in table
    dep.close()


def test_metrics_show_the_reserve_and_its_demand(
    redis: redis_py.Redis, redis_url: str, unique: str
) -> None:
    policy = Policy(pr_share=0.2, reserve=0.3, adaptive=AdaptiveReserve(floor=0.0))
    account = Account(
        name=f"{unique}-acct",
        provider="zai",
        base_url="http://127.0.0.1:1/v1",
        api_key_env="UNUSED_KEY",
        plan=get_preset("zai-lite"),
        policy=policy,
    )
    settings = Settings(
        redis_url=redis_url, queue_name=f"ops-{unique}", accounts=[account], webhook=OPEN
    )
    dep = connect(settings)
    ref = enqueue_local(dep.admission, f"{unique}/small#1")
    dep.admission.submit(
        ref.id, ref.head_sha, ["a", "b"], files=2, plan={}, estimate={"prompts_5h": 2000}
    )
    ctl = ReserveController.for_accounts(dep.admission, [account], key_prefix=LIMITER_PREFIX)
    assert ctl is not None
    ctl.step(dep.admission.now_ms())
    with serve_hook(redis_url, settings.queue_name, settings=settings) as hook:
        response = hook.http.get("/metrics")
    assert response.status_code == 200
    found = {f.name: list(f.samples) for f in text_string_to_metric_families(response.text)}
    reserve = {
        (s.labels["window"], s.labels["mode"]): s.value
        for s in found["reviewq_account_window_reserve"]
        if s.labels["account"] == account.name
    }
    # prompts_5h: burst 2, queued 2; prompts_week: no estimate, the PR's largest
    assert reserve == {("prompts_5h", "adaptive"): 2.0, ("prompts_week", "adaptive"): 2.0}
    parts = {
        (s.labels["window"], s.labels["part"]): s.value
        for s in found["reviewq_account_window_reserve_demand"]
        if s.labels["account"] == account.name
    }
    assert parts[("prompts_5h", "recent")] == 2.0 and parts[("prompts_5h", "queued")] == 2.0
    assert parts[("prompts_5h", "leaving")] == 0.0  # nothing lent: no burst due, no bound
    dep.close()
