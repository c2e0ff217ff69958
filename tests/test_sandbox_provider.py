"""The provider simulator, over real HTTP: its quotas, shapes, faults and bookkeeping.

Every test starts a real uvicorn server on 127.0.0.1 and talks to it with httpx, and
feeds what comes back through the client's own parsers and classifier, so both sides
are checked against each other. Time runs at scale 1 unless a test needs a window to
pass; `/_sim/advance` skips simulated hours without waiting for them.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from scheduler.cli.main import main
from scheduler.quota.plans import Plan, Window, get_preset
from scheduler.sandbox import (
    CHAT_PATHS,
    DEV_KEY,
    SYNTHETIC_CREDITS_MESSAGE,
    SYNTHETIC_LIMIT_MESSAGE,
    Faults,
    Latency,
    ProviderConfig,
    SimClock,
    Simulator,
    create_provider_app,
    max_used_in_any_window,
    parse_diff,
    serve_in_thread,
)
from scheduler.sandbox.provider.clock import go_duration, iso_utc, zai_wall_time
from workers.providers.classify import ResponseClass, classify
from workers.providers.resets import (
    parse_go_duration_ms,
    parse_iso8601,
    parse_zai_message,
    synthetic_reset,
    zai_quota_reset,
)

FAST = Latency(median_s=0.001, p95_s=0.002)
FIVE_H = 5 * 3600.0
GLM = "glm-4.6"
HF = "hf:zai-org/GLM-4.6"
DIFF = """Review this change.

```diff
diff --git a/app/util.py b/app/util.py
--- a/app/util.py
+++ b/app/util.py
@@ -10,3 +10,4 @@ def helper():
     a = 1
--- not a header, a removed line starting with two dashes
+    b = compute(a)
+    return b
     c = 3
@@ -40,2 +41,1 @@
-old = True
 keep = 1
--- a/gone.txt
+++ /dev/null
@@ -1 +0,0 @@
-bye
```
"""


@dataclass
class Sim:
    """A running simulator and a client holding the right key."""

    client: httpx.Client
    flavour: str
    path: str = "/v1/chat/completions"

    def chat(self, model: str, content: str = DIFF, **kwargs: Any) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": content}]}
        return self.client.post(self.path, json=body, **kwargs)

    def stats(self) -> dict[str, Any]:
        return self.client.get("/_sim/stats").json()  # type: ignore[no-any-return]

    def log(self) -> list[dict[str, Any]]:
        return self.client.get("/_sim/log").json()["entries"]  # type: ignore[no-any-return]

    def advance(self, seconds: float) -> None:
        self.client.post("/_sim/advance", json={"seconds": seconds}).raise_for_status()

    def configure(self, **changes: Any) -> httpx.Response:
        return self.client.post("/_sim/config", json=changes)

    def wall_of(self, sim_t: float) -> float:
        """The wall-clock instant the simulator maps simulated time `sim_t` to."""
        clock = self.stats()["clock"]
        return clock["wall_start"] + (sim_t - clock["skipped"]) / clock["time_scale"]


@pytest.fixture
def serve() -> Iterator[Callable[..., Sim]]:
    running: list[tuple[Any, httpx.Client]] = []

    def start(flavour: str = "zai", plan: str = "zai-lite", **kwargs: Any) -> Sim:
        kwargs.setdefault("latency", FAST)
        kwargs.setdefault("seed", 7)
        config = ProviderConfig(flavour=flavour, plan=get_preset(plan), **kwargs)
        handle = serve_in_thread(create_provider_app(config))
        client = httpx.Client(
            base_url=handle.url, headers={"Authorization": f"Bearer {DEV_KEY}"}, timeout=10
        )
        running.append((handle, client))
        return Sim(client, flavour)

    yield start
    for handle, client in running:
        client.close()
        handle.stop()


def judge(response: httpx.Response, provider: str) -> Any:
    """The client's own verdict on a simulator response."""
    now_ms = int(time.time() * 1000)
    return classify(
        response.status_code, response.headers, response.content, now_ms=now_ms, provider=provider
    )


def quota(name: str, limit: float, duration: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "limit": limit, "duration": duration, **extra}


# --- window bookkeeping ------------------------------------------------------------------


def brute_force_max(admissions: list[tuple[float, int]], duration: float) -> int:
    starts = [t for t, _ in admissions]
    return max((sum(c for t, c in admissions if s <= t < s + duration) for s in starts), default=0)


def test_max_used_in_any_window_on_a_hand_built_sequence() -> None:
    log = [(70.0, 2000), (0.0, 1000), (10.0, 1000), (59.9, 500), (60.0, 1000), (130.0, 100)]
    # [59.9, 119.9) holds 500 + 1000 + 2000; [70, 130) stops short of 130.
    assert max_used_in_any_window(log, 60) == 3500
    assert max_used_in_any_window(log, 10) == 2000
    assert max_used_in_any_window([(5.0, 1), (5.0, 2)], 1) == 3  # equal times share a span
    assert max_used_in_any_window([], 60) == 0
    rng = random.Random(3)
    for _ in range(200):
        seq = [
            (rng.choice([0.0, 1.0, 2.5]) + rng.randrange(50), rng.randrange(1, 9))
            for _ in range(30)
        ]
        duration = rng.choice([0.5, 1.0, 7.0, 25.0])
        assert max_used_in_any_window(seq, duration) == brute_force_max(seq, duration)


def test_reset_formats_round_up_and_parse_back() -> None:
    """Printed instants are never early: waiting until one never wakes a client too soon."""
    assert [go_duration(s) for s in (360, 0.02, 3723.5, 1.0001)] == [
        "6m0s",
        "20ms",
        "1h2m3.5s",
        "1.001s",
    ]
    assert parse_go_duration_ms(go_duration(359.9991)) == 360_000
    wall = 1_790_000_000.2
    zai = parse_zai_message(f"Your limit will reset at {zai_wall_time(wall)}")
    assert zai == 1_790_000_001_000
    assert parse_iso8601(iso_utc(wall + 0.0004)) == 1_790_000_000_201
    clock = SimClock(600, wall_start=1_000.0)
    clock.advance(1_800)
    assert clock.wall_at(3_600 + 1_800) == 1_006.0  # the hour left after the skip takes 6 s


def test_stats_measure_the_busiest_span_exactly(serve: Callable[..., Sim]) -> None:
    sim = serve("zai", "zai-pro", provider_quota=[quota("w", 100, "60s")])
    for gap in (0, 10, 45, 20, 100):  # admissions at ~0, 10, 55, 75, 175 simulated s
        sim.advance(gap)
        assert sim.chat(GLM).status_code == 200
    times = [entry["t"] for entry in sim.log()]
    expected = brute_force_max([(t, 1000) for t in times], 60)
    window = sim.stats()["windows"][0]
    assert expected == 3000 == window["max_used_in_any_window"]  # [0, 60) holds 0, 10 and 55
    assert window["used_now"] == 1000 and window["limit"] == 100_000


# --- quota enforcement per flavour --------------------------------------------------------


def test_zai_five_hour_window_refuses_with_1308_and_a_beijing_reset(
    serve: Callable[..., Sim],
) -> None:
    sim = serve("zai", "zai-lite")
    sim.path = "/api/coding/paas/v4/chat/completions"
    assert all(sim.chat(GLM).status_code == 200 for _ in range(80))
    refused = sim.chat(GLM)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "1308"
    assert re.fullmatch(
        r"Usage limit reached for 5 hour\. Your limit will reset at "
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d",
        error["message"],
    )
    first = sim.log()[0]["t"]
    reset_ms = parse_zai_message(error["message"])
    assert reset_ms is not None
    assert abs(reset_ms / 1000 - sim.wall_of(first + FIVE_H)) <= 1
    verdict = judge(refused, "zai")
    assert verdict.cls is ResponseClass.WINDOW_EXHAUSTED and verdict.window_hint == "5h"
    assert verdict.reset_at_ms is not None and verdict.reset_at_ms >= reset_ms
    assert sim.stats()["admitted"] == 80
    sim.advance(FIVE_H)
    assert sim.chat(GLM).status_code == 200


def test_zai_weekly_window_refuses_with_1310(serve: Callable[..., Sim]) -> None:
    sim = serve("zai", "zai-lite", provider_quota=[quota("h5", 50, "5h"), quota("wk", 2, "7d")])
    assert [sim.chat(GLM).status_code for _ in range(3)] == [200, 200, 429]
    error = sim.chat(GLM).json()["error"]
    assert error["code"] == "1310"
    assert error["message"].startswith("Weekly/Monthly Limit Exhausted. Your limit will reset at ")
    reset_ms = parse_zai_message(error["message"])
    assert reset_ms is not None
    assert abs(reset_ms / 1000 - sim.wall_of(sim.log()[0]["t"] + 7 * 86400)) <= 1
    assert sim.stats()["429_by_code"] == {"1310": 2}


def test_waiting_until_the_printed_reset_is_enough(serve: Callable[..., Sim]) -> None:
    """At scale 30 a 30 s window lasts 1 real second: parse the reset, wait, get in."""
    sim = serve("zai", "zai-lite", time_scale=30, provider_quota=[quota("w", 2, "30s")])
    assert [sim.chat(GLM).status_code for _ in range(3)] == [200, 200, 429]
    refused = sim.chat(GLM)
    reset_ms = parse_zai_message(refused.json()["error"]["message"])
    assert reset_ms is not None
    first = sim.log()[0]["t"]
    assert abs(reset_ms / 1000 - sim.wall_of(first + 30)) <= 1
    time.sleep(max(0.0, reset_ms / 1000 - time.time()) + 0.02)
    assert sim.chat(GLM).status_code == 200


def test_zai_peak_hours_weigh_glm5_from_the_plan(serve: Callable[..., Sim]) -> None:
    sim = serve("zai", "zai-max")
    assert sim.chat("glm-5").status_code == 200
    assert sim.chat("glm-4.5-air").status_code == 200
    entries, clock = sim.log(), sim.stats()["clock"]
    beijing_hour = time.gmtime(clock["wall_start"] + entries[0]["t"] + 8 * 3600).tm_hour
    assert entries[0]["cost"] == (3000 if 14 <= beijing_hour < 18 else 2000)
    assert entries[1]["cost"] == 1000


def test_synthetic_quota_header_moves_and_429_names_the_next_tick(
    serve: Callable[..., Sim],
) -> None:
    sim = serve("synthetic", "synthetic", provider_quota=[quota("requests_5h", 3, "5h")])
    sim.path = "/openai/v1/chat/completions"
    remaining = []
    for _ in range(3):
        ok = sim.chat(HF)
        assert ok.status_code == 200
        remaining.append(json.loads(ok.headers["x-synthetic-quotas"])["rollingFiveHourLimit"])
    assert [r["remaining"] for r in remaining] == [2, 1, 0]
    assert [r["limited"] for r in remaining] == [False, False, True]
    refused = sim.chat(HF)
    assert refused.status_code == 429 and refused.json() == {"error": SYNTHETIC_LIMIT_MESSAGE}
    header = json.loads(refused.headers["x-synthetic-quotas"])
    assert (header["subscription"]["limit"], header["subscription"]["requests"]) == (3, 3)
    tick_ms = synthetic_reset(refused.headers["x-synthetic-quotas"])
    assert tick_ms is not None
    assert abs(tick_ms / 1000 - sim.wall_of(sim.log()[0]["t"] + FIVE_H)) < 0.005
    verdict = judge(refused, "synthetic")
    assert verdict.cls is ResponseClass.WINDOW_EXHAUSTED and verdict.window_hint == "5h"
    before = sim.stats()["requests"]
    assert sim.client.get("/v2/quotas").json() == json.loads(
        sim.chat(HF).headers["x-synthetic-quotas"]
    )
    assert sim.stats()["requests"] == before + 1  # the quota endpoint is free
    sim.advance(FIVE_H)
    assert sim.chat(HF).status_code == 200


def test_synthetic_flash_models_weigh_a_tenth(serve: Callable[..., Sim]) -> None:
    flash = "hf:acme/coder-flash"
    sim = serve("synthetic", "synthetic", models=(HF, flash), provider_quota=[quota("r", 1, "5h")])
    assert [sim.chat(flash).status_code for _ in range(11)] == [200] * 10 + [429]
    assert {e["cost"] for e in sim.log() if e["status"] == 200} == {100}


def test_synthetic_regenerating_bucket_ticks_after_the_first_spend(
    serve: Callable[..., Sim],
) -> None:
    regen = quota("requests_5h", 4, "5h", kind="regenerating", tick="15m", tick_percent=25)
    sim = serve("synthetic", "synthetic-v3", provider_quota=[regen])
    assert [sim.chat(HF).status_code for _ in range(5)] == [200] * 4 + [429]
    tick_ms = synthetic_reset(sim.chat(HF).headers["x-synthetic-quotas"])
    assert tick_ms is not None
    assert abs(tick_ms / 1000 - sim.wall_of(sim.log()[0]["t"] + 900)) < 0.005
    sim.advance(900)
    assert [sim.chat(HF).status_code for _ in range(2)] == [200, 429]
    window = sim.stats()["windows"][0]
    assert window["bound"] == 4000 + 1000 * 20 and window["max_used_in_any_window"] == 5000


def test_synthetic_weekly_credits_answer_402(serve: Callable[..., Sim]) -> None:
    credits = quota("weekly", 2, "7d", unit="usd", kind="regenerating", tick="202m", tick_percent=2)
    sim = serve("synthetic", "synthetic-credits", provider_quota=[quota("r", 9, "5h"), credits])
    assert [sim.chat(HF).status_code for _ in range(3)] == [200, 200, 402]
    refused = sim.chat(HF)
    assert refused.json() == {"error": SYNTHETIC_CREDITS_MESSAGE}
    weekly = json.loads(refused.headers["x-synthetic-quotas"])["weeklyTokenLimit"]
    assert weekly["maxCredits"] == "$2.00" and weekly["remainingCredits"] == "$0.00"
    assert weekly["percentRemaining"] == 0
    verdict = judge(refused, "synthetic")
    assert verdict.cls is ResponseClass.WINDOW_EXHAUSTED and verdict.window_hint == "credits"


def test_openai_429_carries_ratelimit_headers(serve: Callable[..., Sim]) -> None:
    sim = serve("openai", "zai-lite", models=("gpt-4.1",), provider_quota=[quota("r", 3, "6m")])
    ok = sim.chat("gpt-4.1")
    assert ok.headers["x-ratelimit-remaining-requests"] == "2"
    sim.chat("gpt-4.1")
    sim.chat("gpt-4.1")
    refused = sim.chat("gpt-4.1")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    wait_ms = parse_go_duration_ms(refused.headers["x-ratelimit-reset-requests"])
    assert wait_ms is not None and 359_000 <= wait_ms <= 360_000
    assert refused.headers["retry-after"] == "360"
    verdict = judge(refused, "openai")
    assert verdict.cls is ResponseClass.WINDOW_EXHAUSTED and verdict.reset_at_ms is not None


# --- concurrency and a quota smaller than the plan ------------------------------------------


def in_background(call: Callable[[], httpx.Response]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(call()))
    thread.start()
    return thread, out


def wait_in_flight(sim: Sim, count: int) -> None:
    deadline = time.monotonic() + 5
    while sim.stats()["in_flight"] < count:
        assert time.monotonic() < deadline, "the request never started"
        time.sleep(0.01)


def test_synthetic_concurrency_is_per_model(serve: Callable[..., Sim]) -> None:
    other = "hf:deepseek-ai/DeepSeek-V3.1"
    sim = serve("synthetic", "synthetic", latency=Latency(median_s=0.6, p95_s=0.6))
    slow, out = in_background(lambda: sim.chat(HF))
    wait_in_flight(sim, 1)
    busy = sim.chat(HF)
    assert busy.status_code == 429 and "x-synthetic-quotas" in busy.headers
    assert judge(busy, "synthetic").cls is ResponseClass.TRANSIENT  # not a quota signal
    assert sim.chat(other).status_code == 200  # another model has its own slot
    slow.join()
    assert out[0].status_code == 200
    assert sim.chat(HF).status_code == 200
    stats = sim.stats()
    assert stats["max_in_flight"] == {"overall": 2, "by_model": {HF: 1, other: 1}}
    assert stats["429_by_code"] == {"concurrency": 1} and stats["admitted"] == 3


def test_zai_concurrency_is_per_key_and_answers_1302(serve: Callable[..., Sim]) -> None:
    sim = serve("zai", "zai-lite", latency=Latency(median_s=0.6, p95_s=0.6))
    slow, out = in_background(lambda: sim.chat(GLM))
    wait_in_flight(sim, 1)
    busy = sim.chat("glm-4.5-air")
    assert busy.status_code == 429 and busy.json()["error"]["code"] == "1302"
    assert judge(busy, "zai").cls is ResponseClass.TRANSIENT
    slow.join()
    assert out[0].status_code == 200 and sim.stats()["max_in_flight"]["overall"] == 1


def test_provider_quota_smaller_than_the_plan_keeps_earlier_spending(
    serve: Callable[..., Sim],
) -> None:
    sim = serve("zai", "zai-pro")
    assert [sim.chat(GLM).status_code for _ in range(2)] == [200, 200]
    changed = sim.configure(provider_quota=[quota("shared_5h", 3, "5h")])
    assert changed.status_code == 200, changed.text
    assert [sim.chat(GLM).status_code for _ in range(2)] == [200, 429]
    window = sim.stats()["windows"][0]
    assert (window["name"], window["limit"], window["used_now"]) == ("shared_5h", 3000, 3000)
    assert sim.configure(provider_quota=[{"name": "bad name!"}]).status_code == 400


def test_quota_refusals_name_their_cause(serve: Callable[..., Sim]) -> None:
    """`shared_quota`: only a provider quota smaller than the plan refuses (someone
    else spends on the key); `over_plan`: the plan's own limit is spent, so the client
    admitted more than its plan allows. The chaos suite allows the first, never the second."""
    sim = serve("synthetic", "synthetic", provider_quota=[quota("requests_5h", 2, "5h")])
    assert [sim.chat(HF).status_code for _ in range(3)] == [200, 200, 429]
    assert sim.stats()["quota_refusals"] == {"shared_quota": 1}

    hour = Window(name="r", limit_milli=2000, duration_ms=3_600_000)
    plan = Plan(
        name="tiny", provider="synthetic", windows=(hour,), source="test", as_of=dt.date(2026, 1, 1)
    )
    small = hour.model_copy(update={"limit_milli": 1000})
    shared = Simulator(ProviderConfig(flavour="synthetic", plan=plan, provider_quota=(small,)))
    alone = Simulator(ProviderConfig(flavour="synthetic", plan=plan))
    for s in (shared, alone):
        s.admit(0.0, HF, 1000)
    assert shared.refusal_cause(1.0, 1000) == "shared_quota"  # the plan has room for one
    assert alone.refusal_cause(1.0, 1000) == "over_plan"  # no provider quota: the plan's
    shared.admit(1.0, HF, 1000)
    assert shared.refusal_cause(2.0, 1000) == "over_plan"
    assert shared.refusal_cause(3_601.0, 1000) == "shared_quota"  # the first charge expired


# --- faults ---------------------------------------------------------------------------------


def test_server_errors_are_transient_and_never_charged(serve: Callable[..., Sim]) -> None:
    sim = serve("zai", "zai-lite", faults=Faults(error_rate=1.0))
    responses = [sim.chat(GLM) for _ in range(12)]
    assert {r.status_code for r in responses} == {500, 502, 503}
    assert all(judge(r, "zai").cls is ResponseClass.TRANSIENT for r in responses)
    stats = sim.stats()
    assert stats["admitted"] == 0 and stats["windows"][0]["used_now"] == 0
    assert stats["faults"] == {"5xx": 12}


def test_faults_replay_with_the_same_seed(serve: Callable[..., Sim]) -> None:
    runs = [serve("zai", "zai-lite", seed=11, faults=Faults(error_rate=0.5)) for _ in range(2)]
    first, second = ([s.chat(GLM).status_code for _ in range(12)] for s in runs)
    assert first == second and 200 in first and set(first) - {200}


def test_timeout_holds_past_the_client_timeout(serve: Callable[..., Sim]) -> None:
    sim = serve("zai", "zai-lite", faults=Faults(timeout_rate=1.0, client_timeout_s=0.3))
    with pytest.raises(httpx.ReadTimeout) as caught:
        sim.chat(GLM, timeout=0.3)
    verdict = classify(None, {}, b"", now_ms=0, error=caught.value, provider="zai")
    assert verdict.cls is ResponseClass.TRANSIENT
    # The abandoned request still holds the key's only slot, as on a real provider.
    assert sim.chat(GLM).json()["error"]["code"] == "1302"
    deadline = time.monotonic() + 5
    while sim.stats()["in_flight"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    started = time.monotonic()
    late = sim.chat(GLM, timeout=5)  # "answer": a patient client gets it late
    assert late.status_code == 200 and time.monotonic() - started >= 0.8
    stats = sim.stats()
    assert stats["faults"]["timeout"] == 2 and stats["admitted"] == 2  # the model did run
    assert [e["code"] for e in sim.log() if e["status"] == 200] == ["late", "late"]


def test_timeout_can_drop_the_connection(serve: Callable[..., Sim]) -> None:
    faults = Faults(timeout_rate=1.0, client_timeout_s=0.2, timeout_action="drop")
    sim = serve("zai", "zai-lite", faults=faults)
    with pytest.raises(httpx.RemoteProtocolError):
        sim.chat(GLM, timeout=5)
    assert sim.log()[0]["code"] == "dropped"


def test_garbage_bodies_are_classified_as_garbage(serve: Callable[..., Sim]) -> None:
    sim = serve("synthetic", "synthetic", faults=Faults(garbage_rate=1.0))
    bodies = {sim.chat(HF).content for _ in range(8)}
    assert b'{"choices": []}' in bodies and any(not b.startswith(b"{") for b in bodies)
    for body in bodies:
        got = classify(200, {}, body, now_ms=0, provider="synthetic")
        assert got.cls is ResponseClass.GARBAGE


def test_cold_start_after_idle(serve: Callable[..., Sim]) -> None:
    """The first request and the first after the idle time wait out the cold start;
    the one between is warm. Which calls were cold is read from the simulator's own
    count, not from a round trip under some figure (a busy machine makes any slow);
    a cold call's duration is only bounded from below."""
    sim = serve("zai", "zai-lite", faults=Faults(cold_start_s=0.5, idle_s=100))
    cold, durations = [], []
    for skip in (0, 0, 100):
        sim.advance(skip)
        started = time.monotonic()
        assert sim.chat(GLM).status_code == 200
        durations.append(time.monotonic() - started)
        cold.append(sim.stats()["faults"].get("cold_start", 0))
    assert cold == [1, 1, 2]
    assert durations[0] >= 0.5 and durations[2] >= 0.5


def test_latency_follows_median_and_p95() -> None:
    config = ProviderConfig(
        flavour="zai", plan=get_preset("zai-lite"), seed=5, latency=Latency(median_s=20, p95_s=60)
    )
    sim = Simulator(config)
    draws = sorted(sim.draw_latency() for _ in range(4000))
    assert 18 < draws[2000] < 22 and 52 < draws[3800] < 68
    first, second = Simulator(config), Simulator(config)
    assert [first.draw_latency() for _ in range(5)] == [second.draw_latency() for _ in range(5)]


def test_fair_use_switch_answers_1313(serve: Callable[..., Sim]) -> None:
    sim = serve("synthetic", "synthetic")
    assert sim.configure(fair_use=True).status_code == 200
    restricted = sim.chat(HF)
    assert restricted.status_code == 429 and restricted.json()["error"]["code"] == "1313"
    assert judge(restricted, "zai").cls is ResponseClass.NEEDS_PERSON
    assert sim.configure(fair_use=False).status_code == 200
    assert sim.chat(HF).status_code == 200
    assert sim.stats()["admitted"] == 1


# --- keys, models, paths, review content, reset ------------------------------------------


@pytest.mark.parametrize("flavour", ["synthetic", "zai", "openai"])
def test_wrong_or_missing_key_is_401(serve: Callable[..., Sim], flavour: str) -> None:
    sim = serve(flavour, "zai-lite")
    model = {"synthetic": HF, "zai": GLM, "openai": "gpt-4.1"}[flavour]
    wrong = sim.chat(model, headers={"Authorization": "Bearer sk-not-the-key"})
    assert wrong.status_code == 401 and DEV_KEY not in wrong.text
    assert judge(wrong, flavour).cls is ResponseClass.NEEDS_PERSON
    missing = httpx.post(str(sim.client.base_url) + sim.path, json={"model": model, "messages": []})
    assert missing.status_code == 401
    assert sim.client.get("/v2/quotas", headers={"Authorization": "nope"}).status_code == 401
    assert sim.stats()["admitted"] == 0


def test_unknown_model_ids_are_case_sensitive(serve: Callable[..., Sim]) -> None:
    sim = serve("synthetic", "synthetic")
    missing = sim.chat("hf:zai-org/glm-4.6")
    assert missing.status_code == 404
    assert judge(missing, "synthetic").cls is ResponseClass.NEEDS_PERSON
    zai = serve("zai", "zai-lite").chat("GLM-4.6")
    assert zai.status_code == 400 and zai.json()["error"]["code"] == "1211"
    assert judge(zai, "zai").cls is ResponseClass.BAD_REQUEST


def test_every_base_path_and_the_zai_quota_endpoint(serve: Callable[..., Sim]) -> None:
    sim = serve("zai", "zai-lite")
    for path in CHAT_PATHS:
        sim.path = path
        assert sim.chat(GLM).status_code == 200, path
    raw = sim.client.get("/api/monitor/usage/quota/limit", headers={"Authorization": DEV_KEY})
    five_h, week = raw.json()["data"]["limits"]
    assert (five_h["unit"], five_h["number"], five_h["percentage"]) == (3, 5, 5)  # 4 of 80
    assert (week["unit"], week["number"], week["percentage"]) == (6, 1, 1)  # 4 of 400
    assert zai_quota_reset(raw.json()) is None  # nothing is used up
    sim.configure(provider_quota=[quota("h5", 4, "5h")])
    full = sim.client.get("/api/monitor/usage/quota/limit", headers={"Authorization": DEV_KEY})
    assert full.json()["data"]["limits"][0]["percentage"] == 100
    reset_ms = zai_quota_reset(full.json())
    assert reset_ms is not None
    assert abs(reset_ms / 1000 - sim.wall_of(sim.log()[0]["t"] + FIVE_H)) < 0.005


def test_review_is_deterministic_and_points_at_new_lines(serve: Callable[..., Sim]) -> None:
    sim = serve("openai", "zai-lite")
    first, second = (sim.chat("gpt-4.1").json() for _ in range(2))
    content = first["choices"][0]["message"]["content"]
    assert content == second["choices"][0]["message"]["content"]
    review = json.loads(content)
    hunks = parse_diff(DIFF)
    assert [(h.path, h.start, [n for n, _ in h.added]) for h in hunks] == [
        ("app/util.py", 10, [11, 12]),
        ("app/util.py", 41, []),
    ]
    assert [(c["path"], c["line"]) for c in review["comments"]] == [("app/util.py", 11)]
    miscounted = "+++ b/a.py\n@@ -1,5 +1,5 @@\n+x\n@@ -9 +9 @@\n+y\n"
    assert [(h.start, h.added) for h in parse_diff(miscounted)] == [
        (1, [(1, "x")]),
        (9, [(9, "y")]),
    ]
    assert "1 file(s) in 2 hunk(s)" in review["summary"]
    assert first["usage"]["total_tokens"] == sum(
        first["usage"][k] for k in ("prompt_tokens", "completion_tokens")
    )
    got = judge(sim.chat("gpt-4.1"), "openai")
    assert got.cls is ResponseClass.OK and got.usage is not None and got.content == content


def test_sim_reset_clears_counters_and_quota(serve: Callable[..., Sim]) -> None:
    sim = serve("zai", "zai-lite", provider_quota=[quota("w", 1, "5h")])
    assert [sim.chat(GLM).status_code for _ in range(2)] == [200, 429]
    sim.client.post("/_sim/reset").raise_for_status()
    stats = sim.stats()
    assert (stats["requests"], stats["admitted"], stats["by_status"]) == (0, 0, {})
    assert stats["windows"][0]["used_now"] == 0 and sim.log() == []
    assert sim.chat(GLM).status_code == 200


# --- the command ----------------------------------------------------------------------------


def test_cli_rejects_an_unknown_plan() -> None:
    result = CliRunner().invoke(main, ["sandbox", "provider", "--flavour", "zai", "--plan", "x"])
    assert result.exit_code == 2 and "unknown plan" in result.output


def test_cli_serves_and_prints_base_url_and_key() -> None:
    args = ["sandbox", "provider", "--flavour", "zai", "--plan", "zai-lite"]
    args += ["--time-scale", "1000", "--latency-median", "1", "--latency-p95", "2"]
    code = "from scheduler.cli.main import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        base_url = lines[1].split()[1]
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/api/coding/paas/v4")
        assert DEV_KEY in lines[2]
        body = {"model": GLM, "messages": [{"role": "user", "content": DIFF}]}
        auth = {"Authorization": f"Bearer {DEV_KEY}"}
        reply = httpx.post(f"{base_url}/chat/completions", json=body, headers=auth, timeout=10)
        assert reply.status_code == 200
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0
