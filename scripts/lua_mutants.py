"""Plant a fixed set of bugs in the limiter, one at a time, and demand the property test
catch every one.

Each mutant is one exact edit of `scheduler/quota/lua/*.lua`, of the fast path that
`scheduler/quota/luagen.py` generates, or of the cap and regeneration formulas the Lua
is generated from (`scheduler/quota/plans.py`): a comparison flipped, a rounding
changed, a cap or a clause dropped. For each, a scratch copy of the tree gets the edit
and runs `tests/test_limiter_property.py` (with CI=true, so hypothesis derandomizes and
a result is reproducible) against a private Redis; a mutant is killed when the tests
fail. The working tree is never touched, so this is safe while others edit it.

Run (docs/testing.md; about 10-20 minutes on 2 cores):
    python scripts/lua_mutants.py                 # every mutant
    python scripts/lua_mutants.py share-half-up   # some, by name
    python scripts/lua_mutants.py --list

Exits 1 if any mutant survives, or if an edit no longer matches its source exactly once
(the source moved on: update the mutant).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ["tests/test_limiter_property.py"]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    why: str


MUTANTS = (
    # ---- the caps and regeneration the scripts are generated from
    Mutant(
        "share-half-up",
        "scheduler/quota/plans.py",
        "share = math.floor(limit_milli * _decimal(self.pr_share))",
        "share = round(limit_milli * self.pr_share + 0.5)",
        "the share cap rounds up (the audit's planted bug)",
    ),
    Mutant(
        "lo-ignores-reserve",
        "scheduler/quota/plans.py",
        "lo = math.floor(limit_milli * (1 - headroom - reserve))",
        "lo = math.floor(limit_milli * (1 - headroom))",
        "a cap dropped: the reserve",
    ),
    Mutant(
        "hi-no-floor",
        "scheduler/quota/plans.py",
        "hi = math.floor(limit_milli * (1 - headroom))",
        "hi = math.ceil(limit_milli * (1 - headroom))",
        "rounding changed: the spendable cap rounds up",
    ),
    Mutant(
        "regen-floor",
        "scheduler/quota/plans.py",
        "return max(1, round(self.limit_milli * _decimal(self.tick_percent or 0) / 100))",
        "return max(1, math.floor(self.limit_milli * _decimal(self.tick_percent or 0) / 100))",
        "rounding changed: regeneration truncates",
    ),
    # ---- acquire.lua, the general path
    # (Flipping `after > hi` to `>=` is an equivalent mutant: the block it guards
    # computes each wait from what must be freed, 0 when nothing must, so entering it
    # for a request that fits exactly changes nothing. Seen to survive; left out.)
    Mutant(
        "bucket-need-off-by-one",
        "scheduler/quota/lua/acquire.lua",
        "t_hi, t_lo = bucket_wait(after - hi), bucket_wait(after - lo)",
        "t_hi, t_lo = bucket_wait(after - hi + 1), bucket_wait(after - lo)",
        "a bucket's window wait frees one milli-unit too many",
    ),
    Mutant(
        "rolling-need-off-by-one",
        "scheduler/quota/lua/acquire.lua",
        "L.rolling_waits(state, log, dur, name, now, pr, after - hi, after - lo,",
        "L.rolling_waits(state, log, dur, name, now, pr, after - hi - 1, after - lo,",
        "a rolling window's wait frees one milli-unit too few",
    ),
    Mutant(
        "reserve-dropped",
        "scheduler/quota/lua/acquire.lua",
        "if after > hi or (over and after > lo) then",
        "if after > hi then",
        "a cap dropped: a PR over its share may eat the reserve",
    ),
    # (`own + c > share` to `>=` is equivalent for the same reason: at the share
    # exactly, the PR's wait is for 0 more to be freed. Seen to survive; left out.)
    Mutant(
        "share-need-off-by-one",
        "scheduler/quota/lua/acquire.lua",
        "own + c - share)\n      else",
        "own + c - share - 1)\n      else",
        "a PR's wait for its share frees one milli-unit too few",
    ),
    Mutant(
        "reserve-vs-share-tie",
        "scheduler/quota/lua/acquire.lua",
        "if large or t_lo <= t_sh then",
        "if large or t_lo < t_sh then",
        "comparison flipped: a tie between reserve and pr_share names pr_share",
    ),
    Mutant(
        "bucket-wait-floor",
        "scheduler/quota/lua/acquire.lua",
        "return a + math.ceil(need / regen) * tick - now",
        "return a + math.floor(need / regen) * tick - now",
        "rounding changed: a bucket's wait is a tick short",
    ),
    Mutant(
        "bucket-never-inclusive",
        "scheduler/quota/lua/acquire.lua",
        "if r + need > limit then",
        "if r + need >= limit then",
        "comparison flipped: a wait the bucket can meet exactly is called never",
    ),
    Mutant(
        "tie-goes-to-later",
        "scheduler/quota/lua/acquire.lua",
        "if wait > best_wait then",
        "if wait >= best_wait then",
        "comparison flipped: ties go to the later constraint",
    ),
    Mutant(
        "cooldown-inclusive",
        "scheduler/quota/lua/acquire.lua",
        "if until_ms > now then\n  consider(until_ms - now, 'cooldown', '')",
        "if until_ms >= now then\n  consider(until_ms - now + 1, 'cooldown', '')",
        "comparison flipped: a block still binds at its end",
    ),
    Mutant(
        "concurrency-cap-dropped",
        "scheduler/quota/lua/acquire.lua",
        "  if CAP > 0 and count >= CAP and not redis.call('ZSCORE', leases, lease) then",
        "  if CAP > 0 and count > CAP and not redis.call('ZSCORE', leases, lease) then",
        "comparison flipped: one lease more than the cap",
    ),
    # ---- bucket.lua, _lib.lua, settle.lua, sync.lua
    Mutant(
        "tick-ceil",
        "scheduler/quota/lua/bucket.lua",
        "local k = math.floor((now - a) / tick)",
        "local k = math.ceil((now - a) / tick)",
        "rounding changed: a bucket regains a tick early",
    ),
    Mutant(
        "full-bucket-keeps-anchor",
        "scheduler/quota/lua/bucket.lua",
        "    if r >= limit then\n      return limit, now\n    end",
        "    if r >= limit then\n      return limit, a\n    end",
        "a bucket that refills keeps its old anchor",
    ),
    Mutant(
        "rolling-wait-strict",
        "scheduler/quota/lua/_lib.lua",
        "if t_hi == INF and acc >= need_hi then t_hi = when end",
        "if t_hi == INF and acc > need_hi then t_hi = when end",
        "comparison flipped: the wait overshoots by one expiry",
    ),
    Mutant(
        "pr-wait-any-owner",
        "scheduler/quota/lua/_lib.lua",
        "      if owner == pr then\n        acc_pr = acc_pr + amount",
        "      if true then\n        acc_pr = acc_pr + amount",
        "the PR's wait counts every PR's charges",
    ),
    # (Dropping settle's `math.min(w.limit, ...)` is equivalent: `bucket_at` reads any
    # remaining at or over the limit as a full bucket anchored at now, which is what
    # the cap stored. Seen to survive; left out.)
    Mutant(
        "settle-wrong-way",
        "scheduler/quota/lua/settle.lua",
        "string.format('%d', math.min(w.limit, r - delta))",
        "string.format('%d', math.min(w.limit, r + delta))",
        "a settle moves a bucket the wrong way",
    ),
    Mutant(
        "sync-at-reset",
        "scheduler/quota/lua/sync.lua",
        "if reset_at <= now then",
        "if reset_at < now then",
        "comparison flipped: a reset that is now still books a charge",
    ),
    # ---- a large PR under an adaptive reserve (docs/reserve.md): over its share at once
    Mutant(
        "large-ignored",
        "scheduler/quota/lua/acquire.lua",
        "local over = large or own + c > share",
        "local over = own + c > share",
        "a large PR under its share spends the reserve (general path)",
    ),
    Mutant(
        "large-waits-for-its-share",
        "scheduler/quota/lua/acquire.lua",
        "if large or t_lo <= t_sh then",
        "if t_lo <= t_sh then",
        "a large PR is told to wait for its own charges, which cannot let it in",
    ),
    Mutant(
        "fast-large-ignored",
        "scheduler/quota/luagen.py",
        "((large or o{i} > {share}) and u{i} > l{i})",
        "((o{i} > {share}) and u{i} > l{i})",
        "a large PR under its share spends the reserve (fast path)",
    ),
    # ---- the fast path, as luagen generates it
    Mutant(
        "fast-share-dropped",
        "scheduler/quota/luagen.py",
        'f"if u{i} > {hi} or ((large or o{i} > {share}) and u{i} > l{i}) then break end"',
        'f"if u{i} > {hi} then break end"',
        "a cap dropped in the fast path: share and reserve",
    ),
    Mutant(
        "fast-hi-off-by-one",
        "scheduler/quota/luagen.py",
        'f"if u{i} > {hi} or ((large or o{i} > {share}) and u{i} > l{i}) then break end"',
        'f"if u{i} > {hi} + 1 or ((large or o{i} > {share}) and u{i} > l{i}) then break end"',
        "the fast path grants one milli-unit over hi",
    ),
    Mutant(
        "fast-trim-boundary",
        "scheduler/quota/luagen.py",
        "f\"if n{i} == '' or n{i} + 0 <= now - {w.duration_ms} then break end\"",
        "f\"if n{i} == '' or n{i} + 0 < now - {w.duration_ms} then break end\"",
        "comparison flipped: the fast path keeps a charge at exactly t + D",
    ),
    Mutant(
        "fast-reserve-ignored",
        "scheduler/quota/luagen.py",
        'self.lines.append(f"math.max(0, {hi} - m{i})")',
        "self.lines.append(str(lo))",
        "the fast path keeps the policy's reserve, not the one in force",
    ),
    # ---- the adaptive reserve (docs/reserve.md): the line in force, and its setting
    Mutant(
        "reserve-in-force-ignored",
        "scheduler/quota/lua/_lib.lua",
        "los[i] = m and math.max(0, K[k + P_HI] - m) or K[k + P_LO]",
        "los[i] = K[k + P_LO]",
        "the general path keeps the policy's reserve, not the one in force",
    ),
    Mutant(
        "reserve-line-off-by-one",
        "scheduler/quota/lua/_lib.lua",
        "los[i] = m and math.max(0, K[k + P_HI] - m) or K[k + P_LO]",
        "los[i] = m and math.max(0, K[k + P_HI] - m + 1) or K[k + P_LO]",
        "the line in force lets a PR over its share one milli-unit into the reserve",
    ),
    Mutant(
        "reserve-clamp-dropped",
        "scheduler/quota/lua/reserve.lua",
        "string.format('%d', math.min(amount, K[k + P_HI]))",
        "string.format('%d', amount)",
        "a reserve above the spendable part is kept as given",
    ),
    # ---- leaving.lua: what the adaptive reserve may lend
    Mutant(
        "leaving-by-exclusive",
        "scheduler/quota/lua/leaving.lua",
        "redis.call('ZRANGEBYSCORE', log, '(' .. from, to)",
        "redis.call('ZRANGEBYSCORE', log, '(' .. from, '(' .. to)",
        "comparison flipped: a charge that leaves exactly by then is not counted",
    ),
    Mutant(
        "leaving-interval-ignored",
        "scheduler/quota/lua/leaving.lua",
        "local from, to = now + keep - w.dur, by[j] - w.dur",
        "local from, to = now - w.dur, by[j] - w.dur",
        "a charge that leaves before the next sizing is counted as lendable",
    ),
    Mutant(
        "leaving-counts-buckets",
        "scheduler/quota/lua/leaving.lua",
        "if w.kind ~= 'g' and to > from then",
        "if to > from then",
        "a regenerating window's charges are counted as leaving",
    ),
    Mutant(
        "fast-regen-off-by-one",
        "scheduler/quota/luagen.py",
        "full, tick, regen = w.limit_milli, w.tick_ms, w.regen_milli",
        "full, tick, regen = w.limit_milli, w.tick_ms, w.regen_milli + 1",
        "the fast path's bucket regains one milli-unit too many per tick",
    ),
)


# A pytest plugin for the copy: CI's derandomized profile without the shrink phase. A
# killed mutant fails the same way, minutes sooner (shrinking a stateful failure takes
# long); the baseline runs the same way, so the comparison is fair.
NO_SHRINK = """\
from hypothesis import Phase, settings

settings.register_profile(
    "mutant",
    parent=settings.get_profile("ci"),
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target],
)
settings.load_profile("mutant")
"""


def copy_tree(dest: Path, tests_from: str | None = None) -> None:
    """What the tests need: the packages, the tests and the project file; the tests as
    of git revision `tests_from` if given (to score an older suite on today's code)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis")
    for name in ("scheduler", "workers", "tests"):
        if name == "tests" and tests_from:
            archive = subprocess.run(
                ["git", "archive", tests_from, "tests"], cwd=ROOT, capture_output=True, check=True
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
            continue
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")
    (dest / "mutant_no_shrink.py").write_text(NO_SHRINK)


def apply(mutant: Mutant, tree: Path) -> None:
    path = tree / mutant.path
    text = path.read_text()
    if text.count(mutant.old) != 1:
        raise SystemExit(
            f"mutant {mutant.name}: {mutant.path} holds its text "
            f"{text.count(mutant.old)} times, not once; update the mutant"
        )
    path.write_text(text.replace(mutant.old, mutant.new))


def run(
    mutant: Mutant | None, timeout: float, tests_from: str | None = None
) -> tuple[bool, float, str]:
    """(tests passed, seconds, last lines) for the tree with `mutant` (None: as is)."""
    with tempfile.TemporaryDirectory(prefix="reviewq-lua-mutant-") as tmp:
        tree = Path(tmp)
        copy_tree(tree, tests_from)
        if mutant is not None:
            apply(mutant, tree)
        # The copy comes first on the path, before the editable install of the tree.
        env = {**os.environ, "CI": "true", "PYTHONPATH": str(tree)}
        cmd = [sys.executable, "-m", "pytest", *TESTS, "-x", "-q", "-p", "no:cacheprovider"]
        cmd += ["-p", "mutant_no_shrink"]
        start = time.monotonic()
        try:
            done = subprocess.run(
                cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return False, time.monotonic() - start, "timed out (counted as killed)"
        lines = (done.stdout + done.stderr).strip().splitlines()
        failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
        tail = "\n".join(failed[:1] + lines[-3:])
        return done.returncode == 0, time.monotonic() - start, tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per mutant")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the unmutated run that must pass"
    )
    parser.add_argument(
        "--tests-from", metavar="REV", help="the tests as of this git revision (a before)"
    )
    args = parser.parse_args()
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:26} {m.path:34} {m.why}")
        return 0
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutants: {sorted(unknown)}")
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    for m in chosen:  # fail before any run if a mutant no longer applies
        if (found := (ROOT / m.path).read_text().count(m.old)) != 1:
            parser.error(f"{m.name}: {m.path} holds its text {found} times, not once")
    if not args.no_baseline:
        ok, secs, tail = run(None, args.timeout, args.tests_from)
        print(f"baseline (no mutant): {'passes' if ok else 'FAILS'} in {secs:.0f} s", flush=True)
        if not ok:
            print(tail)
            return 1
    survivors = []
    for m in chosen:
        ok, secs, tail = run(m, args.timeout, args.tests_from)
        verdict = "SURVIVED" if ok else "killed"
        print(f"{verdict:8} {m.name:26} {secs:5.0f} s  {m.why}", flush=True)
        if ok:
            survivors.append(m.name)
        else:
            failed = [line for line in tail.splitlines() if line.startswith("FAILED")]
            print(f"         {(failed or [tail.splitlines()[-1]])[0][:150]}", flush=True)
    print(f"\n{len(chosen) - len(survivors)} of {len(chosen)} mutants killed")
    if survivors:
        print("survivors: " + ", ".join(survivors))
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
