"""The skip-rule corpus: real PRs from public repositories through `reviewq estimate`'s
planning, with messages per changed file and every skipped or summarised file.

Each repository is a local bare mirror (no network here). A "PR" is a commit on the
default branch's first-parent history that a pull request made: a merge commit
("Merge pull request #N", diffed against its first parent) or a squash merge (a
subject ending in "(#N)", diffed against its parent). The newest `--per-repo` of them
are planned from the mirror's HEAD backwards, so a run is reproducible from the
commit each mirror's HEAD names (printed). The repository's `.gitattributes` files at
that commit are read as the worker would read them at the head.

Get the mirrors first (reviewq's own `fetch` tool, or `git clone --mirror`):
    git clone --mirror https://github.com/encode/httpx /work/.mirror/encode+httpx/repo
    (likewise pallets/flask, python-poetry/poetry, vitejs/vite, withastro/astro)

Run (docs/skiprules.md; a few minutes on 2 cores):
    python scripts/skip_corpus.py                       # the five default mirrors
    python scripts/skip_corpus.py --mirror /path/to/repo.git --per-repo 60
    python scripts/skip_corpus.py --json corpus.json --sample 60 --seed 16

It prints per repository: PRs, changed files, messages, messages per file; then the
total, the bar (<= 0.12 messages per changed file), and a seeded random sample of
skipped/summarised and reviewed files for a person to check by hand. Exits 1 when the
bar is missed. Not run in CI: it is slow and needs the mirrors.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scheduler.config import Settings  # noqa: E402
from scheduler.config.loader import load_settings  # noqa: E402
from workers.review.diff import parse_unified_diff  # noqa: E402
from workers.review.gitattributes import GitAttributes, parse_gitattributes  # noqa: E402
from workers.review.planning import plan_review  # noqa: E402

MIRRORS = Path("/work/.mirror")
DEFAULT_REPOS = (
    "encode/httpx",
    "pallets/flask",
    "python-poetry/poetry",
    "vitejs/vite",
    "withastro/astro",
)
BAR = 0.12
_PHYSICAL = (
    "deleted",
    "binary",
    "renamed without",
    "copied without",
    "no content changes",
    "patch too large",
)
_PR_SUBJECT = re.compile(r"^Merge pull request #\d+|\(#\d+\)$")


@dataclass
class PullRequest:
    repo: str
    base: str
    head: str
    subject: str
    files: int = 0
    messages: int = 0
    outcomes: list[tuple[str, str, str]] = field(default_factory=list)  # path, outcome, why


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "--git-dir", str(repo), *args], capture_output=True, check=True)
    return done.stdout.decode("utf-8", errors="replace")


def pull_requests(repo: Path, name: str, depth: int, min_files: int) -> list[PullRequest]:
    """PR commits among the newest `depth` of HEAD's first-parent history that change at
    least `min_files` files, newest first (a name-only diff reads trees, not blobs)."""
    log = git(repo, "log", "--first-parent", "--format=%H %P%x09%s", f"-{depth}", "HEAD")
    found: list[PullRequest] = []
    for line in log.splitlines():
        shas, _, subject = line.partition("\t")
        head, *parents = shas.split()
        if not parents or not _PR_SUBJECT.search(subject.strip()):
            continue
        names = git(repo, "diff", "--name-only", "--no-renames", parents[0], head)
        if len(names.splitlines()) >= min_files:
            found.append(PullRequest(name, parents[0], head, subject.strip()))
    return found


def spread(found: list[PullRequest], count: int) -> list[PullRequest]:
    """`count` of `found` evenly spaced, then the others in order, to stand in for a
    pick whose blobs the mirror lacks."""
    if not found:
        return []
    picks = list(dict.fromkeys(i * len(found) // count for i in range(count)))
    rest = [i for i in range(len(found)) if i not in set(picks)]
    return [found[i] for i in picks + rest]


def attributes_at(repo: Path, commit: str) -> GitAttributes:
    """Every `.gitattributes` of the tree at `commit`, the root's first."""
    names = git(repo, "ls-tree", "-r", "--name-only", commit).splitlines()
    found = sorted((n for n in names if n.rsplit("/", 1)[-1] == ".gitattributes"), key=len)
    merged = GitAttributes()
    for path in found:
        text = git(repo, "show", f"{commit}:{path}")
        merged = merged.merged(parse_gitattributes(text, base=path.rpartition("/")[0]))
    return merged


def plan_one(repo: Path, pr: PullRequest, settings: Settings) -> PullRequest:
    model = settings.review.model_for(settings.accounts) if settings.accounts else ""
    diff = git(repo, "diff", "--no-color", "--no-ext-diff", "-M", pr.base, pr.head)
    files = parse_unified_diff(diff)
    plan = plan_review(
        files, settings.planning, repo=pr.repo, model=model, attributes=attributes_at(repo, pr.head)
    )
    pr.files, pr.messages = len(files), len(plan.messages)
    skipped = {s.path: s.reason for s in plan.skipped}
    data = {s.path: s.reason for s in plan.summarised_data}
    degraded = set(plan.summarised)
    for file in files:
        path = file.filename
        if path in skipped:
            pr.outcomes.append((path, "skipped", skipped[path]))
        elif path in data:
            pr.outcomes.append((path, "summarised", data[path]))
        elif path in degraded:
            pr.outcomes.append((path, "summarised", "large PR: not among the riskiest"))
        else:
            pr.outcomes.append((path, "reviewed", ""))
    return pr


def report(prs: list[PullRequest], heads: dict[str, str]) -> float:
    print(f"{'repository':24} {'head':12} {'PRs':>4} {'files':>6} {'msgs':>5} {'msg/file':>8}")
    for name, head in heads.items():
        mine = [p for p in prs if p.repo == name]
        files, messages = sum(p.files for p in mine), sum(p.messages for p in mine)
        ratio = messages / files if files else 0.0
        print(f"{name:24} {head[:12]} {len(mine):4} {files:6} {messages:5} {ratio:8.3f}")
    files, messages = sum(p.files for p in prs), sum(p.messages for p in prs)
    ratio = messages / files if files else 0.0
    print(f"{'total':37} {len(prs):4} {files:6} {messages:5} {ratio:8.3f}")
    counts = Counter(o for p in prs for _, o, _ in p.outcomes)
    reasons = Counter(r.split(" (")[0] for p in prs for _, o, r in p.outcomes if o != "reviewed")
    print("outcomes:", dict(counts))
    print("reasons:", dict(reasons.most_common()))
    return ratio


def _kind(outcome: str, reason: str) -> str:
    """ "reviewed", "physical" (nothing on the new side to read: deleted, binary, moved
    unchanged), "large PR" (the existing size cap), or "rule" (the skip rules and the
    data summaries under test)."""
    if outcome == "reviewed":
        return "reviewed"
    if reason.startswith(_PHYSICAL):
        return "physical"
    return "large PR" if reason.startswith("large PR") else "rule"


def sample(prs: list[PullRequest], size: int, seed: int) -> None:
    """Seeded samples for the hand check, one row per (repo, path) at most: `size` files
    not reviewed (those the rules skipped or summarised first, then ones skipped for a
    physical reason) and `size` reviewed ones. The large-PR cap's summaries are left
    out: that rule is not under test here."""
    rows = {(p.repo, path): (p, o, r) for p in prs for path, o, r in p.outcomes}
    pools: dict[str, list[tuple[tuple[str, str], tuple[PullRequest, str, str]]]] = {}
    for key, value in sorted(rows.items()):
        pools.setdefault(_kind(value[1], value[2]), []).append((key, value))
    print("distinct files by kind:", {k: len(v) for k, v in sorted(pools.items())})
    rng = random.Random(seed)
    rule = rng.sample(pools.get("rule", []), min(size, len(pools.get("rule", []))))
    physical = pools.get("physical", [])
    physical = rng.sample(physical, min(size - len(rule), len(physical)))
    reviewed = pools.get("reviewed", [])
    reviewed = rng.sample(reviewed, min(size, len(reviewed)))
    for title, picked in (("not reviewed", rule + physical), ("reviewed", reviewed)):
        print(f"\n{title}: {len(picked)}")
        print("| repo | commit | path | outcome | reason |")
        print("|---|---|---|---|---|")
        for (repo, path), (pr, outcome, reason) in sorted(picked):
            print(f"| {repo} | {pr.head[:10]} | `{path}` | {outcome} | {reason or '-'} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mirror",
        action="append",
        type=Path,
        default=[],
        help="a bare git mirror (repeatable); default: the five under "
        f"{MIRRORS}/<owner>+<name>/repo",
    )
    parser.add_argument("--per-repo", type=int, default=60, help="PRs per repository")
    parser.add_argument(
        "--depth", type=int, default=1000, help="how far back in first-parent history"
    )
    parser.add_argument(
        "--min-files",
        type=int,
        default=3,
        help="only PRs changing at least this many files (one file is one message "
        "whatever the rules do)",
    )
    parser.add_argument("--config", type=Path, default=None, help="reviewq config file")
    parser.add_argument("--json", type=Path, default=None, help="write every outcome here")
    parser.add_argument("--sample", type=int, default=60)
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()
    mirrors = args.mirror or [MIRRORS / n.replace("/", "+") / "repo" for n in DEFAULT_REPOS]
    settings = load_settings(args.config)
    prs: list[PullRequest] = []
    heads: dict[str, str] = {}
    for mirror in mirrors:
        if not mirror.is_dir():
            print(f"{mirror}: no such mirror; see this script's docstring", file=sys.stderr)
            return 2
        name = mirror.parent.name.replace("+", "/") if mirror.name == "repo" else mirror.stem
        heads[name] = git(mirror, "rev-parse", "HEAD").strip()
        planned = 0
        for pr in spread(pull_requests(mirror, name, args.depth, args.min_files), args.per_repo):
            if planned == args.per_repo:
                break
            try:
                prs.append(plan_one(mirror, pr, settings))
                planned += 1
            except subprocess.CalledProcessError as exc:  # the mirror lacks a blob
                why = exc.stderr.decode(errors="replace").strip().splitlines()[-1:]
                print(f"left out {name} {pr.head[:10]}: {why}", file=sys.stderr)
    ratio = report(prs, heads)
    print(f"bar: <= {BAR} messages per changed file: {'met' if ratio <= BAR else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps([asdict(p) for p in prs], indent=1))
    if args.sample:
        sample(prs, args.sample, args.seed)
    return 0 if ratio <= BAR else 1


if __name__ == "__main__":
    sys.exit(main())
