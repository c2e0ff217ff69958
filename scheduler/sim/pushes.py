"""Pushes in a `reviewq simulate` scenario: each a new head of a PR's local diff, and
what the PR's reviews cost across its heads (issue 16: a PR pushed five times should
cost at most 2.5 times one full review, where a full review per push costs six).

Push `k` of a PR gives `files` of its files new content, taking them in order after
those earlier pushes took (so the pushes touch different files, round the PR), and
adds `add` new files. A changed file's diff gains a line naming the push that last
changed it, so the same file at two heads has the same diff exactly when no push in
between changed it. A `force` push changes content the same way; it stands for a
squash or rebase, whose history reviewq cannot follow and whose files it matches by
content. The costs are read back from Redis: every head's messages, and which of
them a worker started (a provider call, billed).
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any, cast

from scheduler.intake import enqueue_pr
from scheduler.sim.diffs import DiffStyle, diff_lines
from scheduler.state.records import decode_messages
from scheduler.state.refs import PullRequestRef

if TYPE_CHECKING:
    from scheduler.sim.run import SimRun
    from scheduler.sim.scenario import PrSpec

__all__ = ["changed_at", "deliver_push", "head_sha", "push_costs", "push_events", "pushed_diff"]


def head_sha(pr: PrSpec, push: int) -> str:
    """The head after `push` pushes (0: as opened)."""
    return uuid.uuid5(uuid.NAMESPACE_URL, pr.id if push == 0 else f"{pr.id}@{push}").hex


def changed_at(pr: PrSpec, push: int) -> list[int]:
    """The indexes of the files push `push` (1-based) gives new content."""
    first = sum(p.files for p in pr.pushes[: push - 1])
    spec = pr.pushes[push - 1]
    return sorted({(first + i) % pr.files for i in range(min(spec.files, pr.files))})


def _versions(pr: PrSpec, push: int) -> dict[int, int]:
    """Each file's index -> the push that last changed it, at head `push`."""
    out: dict[int, int] = {}
    for k in range(1, push + 1):
        out |= dict.fromkeys(changed_at(pr, k), k)
    return out


def pushed_diff(pr: PrSpec, push: int, line_chars: int, style: DiffStyle = "uniform") -> str:
    """The PR's unified diff at head `push` (`synthetic_diff` is push 0)."""
    slug = pr.id.replace("/", "_").replace("#", "_")
    versions = _versions(pr, push)
    total = pr.files + sum(p.add for p in pr.pushes[:push])
    parts = []
    for i in range(total):
        path = f"src/{slug}/module_{i:04d}.py"
        lines = diff_lines(slug, i, pr.lines_per_file, line_chars, style)
        count = pr.lines_per_file
        if i in versions:
            lines, count = lines + f"+# changed by push {versions[i]}\n", count + 1
        parts.append(
            f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n"
            f"@@ -0,0 +1,{count} @@\n{lines}"
        )
    return "".join(parts)


def deliver_push(run: SimRun, pr: PrSpec, push: int) -> None:
    """Enqueue head `push` of the PR as a local diff, as `DirectIntake` does the opening."""
    ref = PullRequestRef(id=pr.id, head_sha=head_sha(pr, push), forge="local")
    text = pushed_diff(pr, push, run.scenario.line_chars, run.scenario.diff_style)
    enqueue_pr(run.admission, ref, {"kind": "diff", "text": text})


def push_events(prs: list[PrSpec]) -> list[tuple[float, str, int, PrSpec]]:
    """Every push of `prs` as (simulated second, PR id, push number, PR), in order."""
    events = [(pr.at + p.at, pr.id, k, pr) for pr in prs for k, p in enumerate(pr.pushes, 1)]
    return sorted(events, key=lambda e: e[:3])


def push_costs(run: SimRun) -> dict[str, Any]:
    """Per PR with pushes: each head's planned and started messages and the files it
    reviewed, and the cost of all heads over the first (full) review's messages."""
    out: dict[str, Any] = {}
    for pr in run.prs:
        if pr.pushes:
            out[pr.id] = _costs(run, pr)
    ratios = [c["ratio"] for c in out.values() if c["ratio"] is not None]
    return {"prs": out, "max_ratio": max(ratios) if ratios else None}


def _costs(run: SimRun, pr: PrSpec) -> dict[str, Any]:
    keys = run.admission.keys
    states = decode_messages(cast(dict[bytes, bytes], run.redis.hgetall(keys.msgs(pr.id))))
    bodies = cast(dict[bytes, bytes], run.redis.hgetall(keys.body(pr.id)))
    heads: dict[int, dict[str, Any]] = {}
    for mid, state in states.items():
        head = heads.setdefault(state.gen, {"gen": state.gen, "messages": 0, "sent": 0})
        head["messages"] += 1
        head["sent"] += state.started_ms is not None
        body = bodies.get(mid.encode())
        files = json.loads(body)["files"] if body else []
        head.setdefault("files", set()).update(files)
    rows = [heads[g] for g in sorted(heads)]
    for row in rows:
        row["files"] = len(row.pop("files", set()))
    full = rows[0]["messages"] if rows else 0
    sent = sum(r["sent"] for r in rows)
    expected = [len(changed_at(pr, k)) + pr.pushes[k - 1].add for k in range(1, len(pr.pushes) + 1)]
    return {
        "heads": rows,
        "pushes": len(pr.pushes),
        "changed_files_per_push": expected,
        "force_pushes": [k for k, p in enumerate(pr.pushes, 1) if p.force],
        "sent": sent,
        "full_review_messages": full,
        "ratio": round(sent / full, 3) if full else None,
    }
