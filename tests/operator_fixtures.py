"""Helpers for the operator command tests (inspect, enqueue, results, cancel,
retry-failed): a config file for one deployment, and PR state seeded through the real
code paths (intake, admission, the limiter), never by writing keys by hand."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from click.testing import CliRunner, Result

from scheduler.admission import REVIEW_JOB, Admission
from scheduler.cli.main import main
from scheduler.config import Settings, load_settings
from scheduler.intake import enqueue_pr
from scheduler.ops.deployment import Deployment, connect
from scheduler.state.jobs import fetch_job
from scheduler.state.refs import PullRequestRef

DIFF = """diff --git a/src/app.py b/src/app.py
--- a/src/app.py
+++ b/src/app.py
@@ -1,2 +1,3 @@
 import os
+import sys
 print(os.name)
"""


def write_config(
    tmp_path: Path,
    redis_url: str,
    queue: str,
    accounts: Sequence[tuple[str, str]] = (),
    extra: str = "",
) -> Path:
    """`accounts`: (name, preset) pairs, main first."""
    text = f'redis_url = "{redis_url}"\nqueue_name = "{queue}"\n'
    for name, plan in accounts:
        text += f'[[accounts]]\nname = "{name}"\nplan = "{plan}"\napi_key_env = "RQ_TEST_KEY"\n'
    path = tmp_path / "reviewq.toml"
    path.write_text(text + extra)
    return path


def deployment(config: Path) -> tuple[Settings, Deployment]:
    settings = load_settings(config)
    return settings, connect(settings)


def invoke(config: Path, *args: str, env: Mapping[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *args], env=dict(env or {}))


def enqueue_local(adm: Admission, pr: str, text: str = DIFF) -> PullRequestRef:
    """A PR from a local diff, through intake as `reviewq enqueue --diff` does."""
    sha = hashlib.sha1(text.encode()).hexdigest()
    ref = PullRequestRef(id=pr, head_sha=sha, forge="local")
    assert enqueue_pr(adm, ref, {"kind": "diff", "text": text})
    return ref


def submit(adm: Admission, ref: PullRequestRef, count: int, per_message: int = 1000) -> int:
    """Plan `count` messages, as `plan_pr` would, each estimated at `per_message`."""
    bodies = [f'{{"index": {n}}}' for n in range(count)]
    cost = {"requests_5h": per_message * count}
    return adm.submit(ref.id, ref.head_sha, bodies, files=count, plan={}, estimate=cost)


def take(adm: Admission, pr: str | None = None, claim_ms: int = 60_000) -> tuple[str, int]:
    """Take the queue's first review job (of `pr`, if given) as a worker would, and
    claim its message."""
    for job_id in adm.queue.get_job_ids():
        job = fetch_job(job_id, adm.redis)
        if job.func_name == REVIEW_JOB and (pr is None or job.args[1].startswith(f"{pr}|")):
            break
    else:
        raise AssertionError("no review job on the queue")
    adm.queue.remove(job_id)
    _, member, dispatch = job.args
    assert adm.claim(member, dispatch, claim_ms) is not None
    return member, dispatch


def finish(adm: Admission, member: str, dispatch: int, *, ok: bool, account: str = "a") -> None:
    cost = {"requests_5h": 1000} if ok else {}
    assert adm.finish(
        member,
        dispatch,
        ok=ok,
        reason=None if ok else "provider said 400: bad request",
        account=account,
        cost=cost,
        reply="{}" if ok else None,
    )
