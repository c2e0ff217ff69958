"""The chaos suite's harness: run a scenario under a fault plan, check three invariants.

Every part is real and separate, as in production: a private Redis server; the
webhook server (`reviewq serve`'s app, its own process) receiving signed deliveries;
`reviewq worker` supervisors (`worker_main.py`, each its own process group, with its
waker and RQ worker children); the provider simulator, which enforces its own quota
and referees it; and the fake GitHub, which lists the files and receives the
reviews. Time is compressed as in `simulate` (`scheduler.sim.simulate.run_scenario`, which
this drives); the faults are fired from its `on_tick` hook at simulated instants.

The invariants, read from the referees and from Redis, never from reviewq's own view:
- nothing lost: every PR is done, each of its messages is in a terminal state
  (one state record per message: exactly one), its count matches the plan;
- nothing over-spent: the simulator's `max_used_in_any_window` stays within every
  limit, and no quota refusal is `over_plan` (our own over-admission; a refusal only
  a provider quota smaller than the plan explains is `shared_quota`, expected there);
- nothing double-posted: exactly one review per PR and head SHA on the fake GitHub
  (on the fake GitLab: one summary note per merge request head).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import redis as redis_py
from rq import Worker
from rq.exceptions import NoSuchJobError

from scheduler.admission import job_id_for
from scheduler.quota.circuit import Circuit
from scheduler.quota.limiter import Limiter
from scheduler.sandbox.localredis import LocalRedis
from scheduler.sim.demo import WebhookIntake
from scheduler.sim.gitlab_intake import GitLabWebhookIntake, gitlab_scenario
from scheduler.sim.run import SimRun
from scheduler.sim.scenario import PrSpec, Scenario
from scheduler.sim.simulate import run_scenario
from scheduler.state.jobs import fetch_job, review_queue
from scheduler.state.records import TERMINAL, read_pr
from workers.providers.quota import default_window_map
from workers.runtime import RuntimeSpec

__all__ = [
    "AofRedis",
    "Chaos",
    "ChaosResult",
    "Fault",
    "Group",
    "Supervisors",
    "base_scenario",
    "check_invariants",
    "run_chaos",
]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
ENTRY = HERE / "worker_main.py"
# Where every chaos run appends its figures, one JSON object a line (optional).
RECORD_ENV = "REVIEWQ_CHAOS_RECORD"


def base_scenario(**changes: Any) -> Scenario:
    """A busy run that keeps the quota binding: 5 h windows of 60 requests compressed to
    12 s, two provider slots, calls of about 0.4 s, so budget and workers run out at
    about the same pace; one 60-message PR, then small and medium PRs behind it. About
    100 messages: two and a bit windows, some 30 s of wall time."""
    data: dict[str, Any] = {
        "time_scale": 1500,
        "duration": "24h",
        "workers": 3,
        "policy": "fair",
        "per_pr_inflight": 2,
        "accounts": [
            {
                "name": "synth",
                "plan": {
                    "windows": [{"name": "requests_5h", "limit": 60, "duration": "5h"}],
                    "concurrency": 2,
                },
                "policy": {"headroom": 0.1, "pr_share": 0.5, "reserve": 0.1},
            }
        ],
        "latency": {"median": "10m", "p95": "15m"},
        "max_message_tokens": 4000,
        "prs": [{"id": "acme/mono#100", "at": 0, "files": 60, "lines_per_file": 300}],
        "generators": [
            {
                "prefix": "acme/api",
                "count": 8,
                "files": 4,
                "lines_per_file": 60,
                "start": "20m",
                "every": "50m",
            },
            {
                "prefix": "acme/web",
                "count": 3,
                "files": 10,
                "lines_per_file": 300,
                "start": "1h",
                "every": "2h",
            },
        ],
    }
    data.update(changes)
    return Scenario.model_validate(data)


def chaos_spec(spec: RuntimeSpec, **changes: Any) -> RuntimeSpec:
    """Recovery times a test can wait for: a dead worker's message is run again after
    3 s (its claim lapses), its provider slot frees after 3 s (its lease lapses); a
    call with no answer in 2 s is a timeout; `reviewq worker` stops within 30 s."""
    defaults: dict[str, Any] = {
        "claim_ms": 3_000,
        "lease_ms": 3_000,
        "job_timeout_s": 30,
        "provider_timeout_s": 2.0,
    }
    return dataclasses.replace(spec, **{**defaults, **changes})


def _sync_maps(scenario: Scenario) -> dict[str, Any]:
    """Provider quota readings (Synthetic's header on every answer, Z.AI's endpoint)
    find their plan window by its duration (5 h, a week), which the time-compressed
    plans no longer have; map them by name from the uncompressed plans, so the
    provider-sync path works here as in production (`simulate` does not map them: its
    limiter runs on its own count)."""
    maps = {a.name: default_window_map(a.plan) for a in scenario.accounts}
    return {"quota_window_maps": maps}


# -- worker processes ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Group:
    """One `reviewq worker --processes N` supervisor, maybe under `faketime -f OFFSET`."""

    processes: int
    faketime: str | None = None


def faketime_binary() -> str | None:
    return shutil.which("faketime")


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError):
                kids = [int(p) for p in (task / "children").read_text().split()]
                out += kids
                todo += kids
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes: it only waits for its parent to reap it.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


class Supervisors:
    """A `WorkerLauncher` that runs each `Group` as a `reviewq worker` process."""

    def __init__(self, groups: list[Group], workdir: Path) -> None:
        self.groups = groups
        self.workdir = workdir
        self.procs: list[tuple[Group, subprocess.Popen[bytes]]] = []
        self.spec: RuntimeSpec | None = None
        self.redis: redis_py.Redis | None = None

    @contextlib.contextmanager
    def __call__(self, spec: RuntimeSpec, count: int) -> Iterator[Supervisors]:
        if sum(g.processes for g in self.groups) != count:
            raise ValueError(f"groups run {self.groups} processes, the scenario wants {count}")
        self.spec = spec
        self.redis = redis_py.Redis.from_url(spec.redis_url)
        path = self.workdir / "spec.pickle"
        path.write_bytes(pickle.dumps(spec))
        try:
            for i, group in enumerate(self.groups):
                self.procs.append((group, self._start(i, group, path)))
            yield self
        finally:
            self.stop()
            self.redis.close()

    def _start(self, i: int, group: Group, spec_path: Path) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, str(ENTRY), str(spec_path), str(group.processes)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if group.faketime is not None:
            binary = faketime_binary()
            if binary is None:
                raise RuntimeError("faketime is not installed")
            # Only the wall clock is shifted: that is the skew a host really has.
            cmd = [binary, "-f", group.faketime, *cmd]
            env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
        with (self.workdir / f"workers-{i}.log").open("ab") as log:
            return subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
                start_new_session=True,  # its own process group, stopped as one
            )

    def stop(self) -> None:
        """SIGTERM every group (RQ's warm shutdown), then SIGKILL what is left."""
        for _, proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 40
        for _, proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def workers(self) -> list[Any]:
        """RQ workers registered on the queue whose process is alive and ours."""
        assert self.spec is not None and self.redis is not None
        ours = {pid for _, proc in self.procs for pid in descendants(proc.pid)}
        queue = review_queue(self.spec.queue_name, self.redis)
        return [w for w in Worker.all(queue=queue) if w.pid in ours and alive(int(w.pid or 0))]

    def group_of(self, pid: int) -> int | None:
        for i, (_, proc) in enumerate(self.procs):
            if pid in descendants(proc.pid):
                return i
        return None

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for i in range(len(self.procs)):
            path = self.workdir / f"workers-{i}.log"
            with contextlib.suppress(OSError):
                out.append(f"--- workers-{i}.log ---")
                out += path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out)


# -- a Redis that can crash ------------------------------------------------------------


class AofRedis:
    """A private Redis with AOF `everysec`, which can crash and come back.

    `appendfsync everysec` hands every write to the kernel at once and fsyncs once a
    second, so a crash of the redis-server process alone loses nothing: the kernel
    still has the data. What everysec can lose is what a *host* crash (power, kernel)
    takes with the page cache: up to about a second of writes. `crash(loss_s)` models
    that: SIGKILL, then the AOF cut back to its length `loss_s` earlier (sampled every
    tick), which is what the disk held after the last fsync.
    """

    def __init__(self, server: LocalRedis) -> None:
        self.server = server
        self.samples: list[tuple[float, Path, int]] = []

    def _incr(self) -> Path:
        manifest = self.server.directory / "appendonlydir" / "appendonly.aof.manifest"
        for line in manifest.read_text().splitlines():
            fields = line.split()
            if "type" in fields and fields[fields.index("type") + 1] == "i":
                return manifest.parent / fields[fields.index("file") + 1]
        raise RuntimeError(f"no incremental AOF file in {manifest}")

    def sample(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            incr = self._incr()
            self.samples.append((time.monotonic(), incr, incr.stat().st_size))

    def crash(self, loss_s: float = 1.0) -> dict[str, Any]:
        """SIGKILL, drop the AOF's last `loss_s` of writes, start again (same port and
        directory). Returns what was cut and how long Redis was away."""
        killed_at = time.monotonic()
        self.server.kill()
        incr = self._incr()
        size = incr.stat().st_size
        kept = [s for t, f, s in self.samples if t <= killed_at - loss_s and f == incr]
        keep = kept[-1] if kept else 0
        with incr.open("r+b") as fh:
            fh.truncate(keep)
        self.server.start()
        return {
            "lost_bytes": size - keep,
            "loss_s": loss_s,
            "down_ms": round((time.monotonic() - killed_at) * 1000),
        }


# -- fault plans -----------------------------------------------------------------------


@dataclasses.dataclass
class Fault:
    """`action(chaos)` at simulated second `at_s`, then every `every_s` until `until_s`."""

    label: str
    at_s: float
    action: Callable[[Chaos], object]
    every_s: float | None = None
    until_s: float | None = None
    fired: int = 0

    def due(self, now_sim: float) -> bool:
        if self.every_s is None:
            return self.fired == 0 and now_sim >= self.at_s
        if self.until_s is not None and now_sim > self.until_s:
            return False
        return now_sim >= self.at_s + self.fired * self.every_s


@dataclasses.dataclass
class ChaosIntake:
    """The demo's webhook intake (signed deliveries to a `reviewq serve` process, PRs
    on the fake GitHub), with the chaos suite's recovery times in the spec."""

    webhook: WebhookIntake | GitLabWebhookIntake = dataclasses.field(default_factory=WebhookIntake)
    spec_changes: dict[str, Any] = dataclasses.field(default_factory=dict)
    spec: RuntimeSpec | None = None
    delivered_at: list[float] = dataclasses.field(default_factory=list)

    def prepare(self, stack: contextlib.ExitStack, spec: RuntimeSpec) -> RuntimeSpec:
        self.spec = chaos_spec(self.webhook.prepare(stack, spec), **self.spec_changes)
        return self.spec

    def deliver(self, run: SimRun, pr: PrSpec) -> None:
        self.webhook.deliver(run, pr)
        self.delivered_at.append(time.monotonic())


@dataclasses.dataclass
class Chaos:
    """What a fault action can reach while the run goes on."""

    name: str
    faults: list[Fault]
    supervisors: Supervisors
    intake: ChaosIntake
    rng: random.Random
    aof: AofRedis | None = None
    on_tick: Callable[[Chaos, float], None] | None = None
    run: SimRun | None = None
    now_sim: float = 0.0
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def spec(self) -> RuntimeSpec:
        assert self.intake.spec is not None
        return self.intake.spec

    @property
    def sim(self) -> SimRun:
        assert self.run is not None
        return self.run

    def event(self, label: str, **details: Any) -> None:
        self.events.append({"t_s": round(self.now_sim), "event": label, **details})

    def provider(self, account: str | None = None) -> str:
        name = account or next(iter(self.sim.providers))
        return self.sim.providers[name].url

    def configure_provider(self, changes: dict[str, Any], account: str | None = None) -> None:
        response = httpx.post(f"{self.provider(account)}/_sim/config", json=changes, timeout=10)
        response.raise_for_status()

    def provider_stats(self, account: str | None = None) -> dict[str, Any]:
        return cast(dict[str, Any], httpx.get(f"{self.provider(account)}/_sim/stats").json())

    def limiter(self, account: str | None = None) -> Limiter:
        name = account or self.sim.accounts[0].name
        found = next(a for a in self.sim.accounts if a.name == name)
        return Limiter(self.sim.redis, found, key_prefix=self.sim.limiter_prefix)

    def circuit(self) -> Circuit:
        return Circuit(self.sim.redis, key_prefix=self.sim.limiter_prefix)

    @property
    def github(self) -> Any:
        assert isinstance(self.intake.webhook, WebhookIntake)
        assert self.intake.webhook.github is not None
        return self.intake.webhook.github.control

    @property
    def gitlab(self) -> Any:
        assert isinstance(self.intake.webhook, GitLabWebhookIntake)
        return self.intake.webhook.control

    def kill_random_worker(self) -> int | None:
        """SIGKILL one live RQ worker child at random; its supervisor replaces it."""
        workers = self.supervisors.workers()
        if not workers:
            self.event("kill skipped: no live worker")
            return None
        victim = self.rng.choice(workers)
        job = victim.get_current_job_id()
        pid = int(victim.pid or 0)
        os.kill(pid, signal.SIGKILL)
        what = "idle"
        if job:
            what = job.split("-")[1] if job.startswith("rq-") else "job"
        self.event("SIGKILL worker", pid=pid, doing=what)
        return pid

    def tick(self, run: SimRun, now_sim: float) -> None:
        self.run, self.now_sim = run, now_sim
        if self.aof is not None:
            self.aof.sample()
        for fault in self.faults:
            if fault.due(now_sim):
                fault.fired += 1
                outcome = fault.action(self)
                if outcome is not None and outcome is not False:
                    self.event(fault.label, outcome=outcome)
        if self.on_tick is not None:
            self.on_tick(self, now_sim)


# -- running and reading back ----------------------------------------------------------


@dataclasses.dataclass
class ChaosResult:
    name: str
    seconds: float
    report: dict[str, Any]
    prs: list[dict[str, Any]]
    reviews: list[dict[str, Any]]
    github: dict[str, Any]
    sim_log: dict[str, list[dict[str, Any]]]
    workers: list[dict[str, Any]]
    events: list[dict[str, Any]]
    notes: dict[str, Any]
    webhooks: dict[str, int]
    rq_failed: list[str] = dataclasses.field(default_factory=list)
    seed: int = 0
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)


def _read_prs(run: SimRun) -> list[dict[str, Any]]:
    """Each PR as Redis holds it at the end: every generation's message states."""
    out: list[dict[str, Any]] = []
    for spec in run.prs:
        view = read_pr(run.redis, run.admission.keys, spec.id)
        if view is None:
            out.append({"id": spec.id, "status": "never registered", "messages": {}})
            continue
        out.append(
            {
                "id": spec.id,
                "status": view.meta.status,
                "gen": view.meta.gen,
                "head_sha": view.meta.head_sha,
                "total": view.meta.total,
                "error": view.meta.error,
                "messages": {
                    mid: {
                        "gen": s.gen,
                        "status": s.status,
                        "reason": s.reason,
                        "runs": s.runs,
                        "retries": s.retries,
                        "dispatch": s.dispatch,
                        **({} if s.terminal else _job_state(run, f"{spec.id}|{mid}", s.dispatch)),
                    }
                    for mid, s in view.messages.items()
                },
            }
        )
    return out


def _job_state(run: SimRun, member: str, dispatch: int) -> dict[str, Any]:
    """For a message that did not end: what RQ says of the job of its last dispatch."""
    try:
        job_id = job_id_for(run.admission.keys.prefix, member, dispatch)
        job = fetch_job(job_id, run.redis)
    except NoSuchJobError:
        return {"job": "missing"}
    return {"job": str(job.get_status()), "worker": job.worker_name, "job_ended": job.ended_at}


def _failure(run: SimRun, job_id: str) -> str:
    """An RQ job in the failed registry: what it was and the last line of why."""
    try:
        job = fetch_job(job_id, run.redis)
    except NoSuchJobError:
        return job_id
    result = job.latest_result()  # rq 2+: the failure's text is on its Result
    failed = result is not None and result.type == result.Type.FAILED
    why = ((result.exc_string if failed else None) or "").strip().splitlines()
    return f"{job.description}: {why[-1] if why else '?'}"


def _read_workers(chaos: Chaos, run: SimRun) -> list[dict[str, Any]]:
    queue = review_queue(chaos.spec.queue_name, run.redis)
    rows = []
    for worker in Worker.all(queue=queue):
        pid = int(worker.pid or 0)
        rows.append(
            {
                "pid": pid,
                "group": chaos.supervisors.group_of(pid),
                "alive": alive(pid),
                "ok": worker.successful_job_count,
                "failed": worker.failed_job_count,
            }
        )
    return rows


def run_chaos(
    name: str,
    scenario: Scenario,
    *,
    redis: LocalRedis,
    workdir: Path,
    faults: list[Fault],
    groups: list[Group] | None = None,
    aof: bool = False,
    seed: int | None = None,
    on_tick: Callable[[Chaos, float], None] | None = None,
    on_end: Callable[[Chaos], None] | None = None,
    spec_changes: dict[str, Any] | None = None,
    forge: str = "github",
) -> ChaosResult:
    """Run `scenario` with `faults` and read back everything the invariants need.
    `spec_changes` override `chaos_spec`'s fields of the workers' `RuntimeSpec`.
    `forge="gitlab"`: the PRs are merge requests on the fake GitLab (the scenario's ids
    become GitLab's, `gitlab_scenario`), and the reviews counted are its summary notes."""
    if forge == "gitlab":
        scenario = gitlab_scenario(scenario)
    webhook = GitLabWebhookIntake() if forge == "gitlab" else WebhookIntake()
    groups = groups or [Group(scenario.workers)]
    seed = seed if seed is not None else int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)  # which worker dies: the seed is in the figures
    chaos = Chaos(
        name=name,
        faults=faults,
        supervisors=Supervisors(groups, workdir),
        intake=ChaosIntake(
            webhook=webhook, spec_changes={**_sync_maps(scenario), **(spec_changes or {})}
        ),
        rng=rng,
        aof=AofRedis(redis) if aof else None,
        on_tick=on_tick,
    )
    ended: dict[str, Any] = {}

    def at_end(run: SimRun) -> None:
        chaos.run = run
        if on_end is not None:
            on_end(chaos)
        ended["prs"] = _read_prs(run)
        ended["workers"] = _read_workers(chaos, run)
        ended["github"] = chaos.intake.webhook.control.stats()  # the fake forge's counts
        queue = review_queue(chaos.spec.queue_name, run.redis)
        ended["rq_failed"] = [_failure(run, j) for j in queue.failed_job_registry.get_job_ids()]
        ended["sim_log"] = {
            n: httpx.get(f"{h.url}/_sim/log", timeout=10).json()["entries"]
            for n, h in run.providers.items()
        }

    started = time.monotonic()
    try:
        report = run_scenario(
            scenario,
            redis_url=redis.url,
            intake=chaos.intake,
            workers=chaos.supervisors,
            on_tick=chaos.tick,
            on_end=at_end,
        )
    except BaseException:
        print(chaos.supervisors.log_tail(), file=sys.stderr)
        raise
    report.pop("trace", None)
    return ChaosResult(
        name=name,
        seconds=round(time.monotonic() - started, 1),
        report=report,
        prs=ended["prs"],
        reviews=chaos.intake.webhook.last_reviews,
        github=ended["github"],
        sim_log=ended["sim_log"],
        workers=ended["workers"],
        events=chaos.events,
        notes=chaos.notes,
        webhooks=dict(chaos.intake.webhook.outcomes),
        rq_failed=ended["rq_failed"],
        seed=seed,
    )


# -- the invariants ---------------------------------------------------------------------


def check_invariants(
    result: ChaosResult,
    *,
    allow_failed: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assert the three invariants; return (and record) the run's figures."""
    figures = _figures(result, extra or {})
    result.figures = figures
    _record(figures)
    print(f"\nchaos {result.name}: {json.dumps(figures, sort_keys=True)}")
    lost = figures["lost"]
    assert not lost, f"lost: {lost}\nevents: {result.events}"
    if not allow_failed:
        assert figures["messages_failed"] == 0, _failed(result)
    for account in result.report["accounts"]:
        for window in account["windows"]:
            assert window["max_used_in_any_window"] <= window["limit"], (account["name"], window)
        over = account.get("quota_refusals", {}).get("over_plan", 0)
        assert over == 0, f"{account['name']}: {over} quota refusals from our own over-admission"
    assert figures["heads_reviewed_twice"] == 0, result.reviews
    assert figures["heads_not_reviewed"] == [], figures
    return figures


def _failed(result: ChaosResult) -> list[tuple[str, str, str | None]]:
    return [
        (pr["id"], mid, m["reason"])
        for pr in result.prs
        for mid, m in pr["messages"].items()
        if m["status"] == "failed"
    ]


def _figures(result: ChaosResult, extra: dict[str, Any]) -> dict[str, Any]:
    lost: list[str] = []
    statuses: Counter[str] = Counter()
    for pr in result.prs:
        current = {k: m for k, m in pr["messages"].items() if m["gen"] == pr.get("gen")}
        if pr["status"] != "done":
            lost.append(f"{pr['id']}: PR {pr['status']}")
        if not current or len(current) != pr.get("total"):
            lost.append(f"{pr['id']}: {len(current)} messages of {pr.get('total')}")
        for mid, m in pr["messages"].items():
            statuses[m["status"]] += m["gen"] == pr.get("gen")
            if m["status"] not in TERMINAL:
                job = {k: m[k] for k in ("job", "worker", "job_ended") if k in m}
                lost.append(
                    f"{pr['id']}|{mid}: {m['status']} ({m['reason']}) d{m['dispatch']} {job}"
                )
    per_head = Counter((r.get("pr"), r.get("commit_id")) for r in result.reviews)
    heads = {(pr["id"], pr.get("head_sha")) for pr in result.prs}
    accounts = {}
    for account in result.report["accounts"]:
        accounts[account["name"]] = {
            "requests": account["requests"],
            "429_by_code": account["provider_429_by_code"],
            "quota_refusals": account.get("quota_refusals", {}),
            "windows": {
                w["name"]: f"{w['max_used_in_any_window']:g}/{w['limit']:g}"
                for w in account["windows"]
            },
            "max_in_flight": account["max_in_flight"],
        }
    return {
        "scenario": result.name,
        "seed": result.seed,
        "seconds": result.seconds,
        "ended_sim_h": round((result.report.get("ended_s") or 0) / 3600, 2),
        "prs": len(result.prs),
        "messages_total": sum(statuses.values()),
        "messages_done": statuses["done"],
        "messages_failed": statuses["failed"],
        "failed": [f"{pr}|{mid}: {reason}" for pr, mid, reason in _failed(result)],
        "lost": lost,
        "accounts": accounts,
        "reviews": len(result.reviews),
        "heads_reviewed_twice": sum(n > 1 for n in per_head.values()),
        "heads_not_reviewed": sorted(f"{p}@{(s or '')[:8]}" for p, s in heads - set(per_head)),
        "github_by_status": result.github.get("by_status", {}),
        "rq_failed_jobs": result.rq_failed,
        "workers_seen": len(result.workers),
        "faults": [e for e in result.events],
        **extra,
    }


def _record(figures: dict[str, Any]) -> None:
    path = os.environ.get(RECORD_ENV, "").strip()
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(figures, sort_keys=True) + "\n")
