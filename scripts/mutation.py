"""Mutation testing of the rule modules with mutmut, and the score per module.

The modules are those where a wrong branch silently costs money or trust (skip rules,
planning, reply parsing, classification and reset parsing, the webhook's signature and
event rules, the sinks' marker check); `[tool.mutmut]` in pyproject.toml lists them and
the test files that judge them. mutmut changes one operator, constant or call at a
time (a mutant) and runs the tests that cover the changed function; a mutant is killed
when they fail. Survivors are listed in docs/testing.md, each explained (an equivalent
mutant: no test could tell) or killed by a new test.

mutmut works in a `mutants/` copy of the tree; this script runs it in a scratch copy of
the working tree (DIR, default /tmp/reviewq-mutation), so the working tree is never
touched and several people can run it at once. The Lua limiter has its own fixed
mutants: scripts/lua_mutants.py.

Run (docs/testing.md; about 30-60 minutes on 2 cores for a fresh run):
    pip install -c constraints.txt -e '.[mutation]'
    python scripts/mutation.py                       # fresh copy, every mutant
    python scripts/mutation.py --rerun-survivors     # same DIR: new tests, old survivors
                                                     # (sources unchanged since the copy)
    python scripts/mutation.py --report              # only print DIR's last results
    python scripts/mutation.py --module workers/providers/classify.py  # one module (repeatable)

`--module PATH` (repeatable) mutates only those of the listed modules: the copy's
`only_mutate` is narrowed to them (all the listed test files still judge them), and the
report covers only them. Use a DIR of your own when others may be running.

Prints per module: mutants, killed, survived, no tests, and the score (killed of those
tested). Writes DIR/survivors.txt (each survivor's diff). Exits 1 if any module scores
below --min-score (default 0: the score is reported, docs/testing.md judges it).
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KILLED = {1, 3, 36, 37, -24, 24, 152, 255}  # mutmut's exit codes: failed, timeout, type check
SURVIVED = {0}
NO_TESTS = {5, 33}


def copy_tree(dest: Path) -> None:
    """The working tree as it is (tracked and new files, not ignored ones)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        rel = Path(raw.decode())
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def refresh_tests(dest: Path) -> None:
    """New tests into an existing copy (the sources, and so the mutants, stay). mutmut
    runs against a mutant only the tests its stats say cover the function; the stats
    go, so that a new test is found covering what it covers (else it is never run)."""
    for name in ("tests", "pyproject.toml"):
        src, dst = ROOT / name, dest / name
        if src.is_dir():
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    (dest / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)


def modules() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return list(config["only_mutate"])


def narrow(dest: Path, only: list[str]) -> None:
    """The copy's `only_mutate` cut down to `only` (a subset of the configured list)."""
    pyproject = dest / "pyproject.toml"
    text = pyproject.read_text()
    start = text.index("only_mutate = [")
    end = text.index("]", start) + 1
    listed = "".join(f'\n    "{path}",' for path in only)
    pyproject.write_text(f"{text[:start]}only_mutate = [{listed}\n]{text[end:]}")
    config = tomllib.loads(pyproject.read_text())["tool"]["mutmut"]
    assert config["only_mutate"] == only, config["only_mutate"]


def results(dest: Path, only: list[str] | None = None) -> dict[str, dict[str, int | None]]:
    """module path -> {mutant name: exit code (None: not run)}."""
    out: dict[str, dict[str, int | None]] = {}
    for path in only or modules():
        meta = dest / "mutants" / f"{path}.meta"
        if meta.exists():
            out[path] = json.loads(meta.read_text())["exit_code_by_key"]
    return out


def mutmut(dest: Path, *args: str) -> int:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "mutmut", *args], cwd=dest, env=env).returncode


def report(dest: Path, min_score: float, only: list[str] | None = None) -> int:
    found = results(dest, only)
    if not found:
        print(f"no mutmut results in {dest}/mutants", file=sys.stderr)
        return 1
    print(
        f"\n{'module':40} {'mutants':>7} {'killed':>6} {'survived':>8} {'no tests':>8} {'score':>6}"
    )
    totals: Counter[str] = Counter()
    survivors: list[str] = []
    low = []
    for path, codes in found.items():
        c = Counter(
            "killed"
            if code in KILLED
            else "survived"
            if code in SURVIVED
            else "no tests"
            if code in NO_TESTS
            else "other"
            for code in codes.values()
        )
        tested = c["killed"] + c["survived"]
        score = 100 * c["killed"] / tested if tested else 100.0
        low += [path] if score < min_score else []
        totals.update(c)
        totals["mutants"] += len(codes)
        survivors += sorted(name for name, code in codes.items() if code in SURVIVED)
        print(
            f"{path:40} {len(codes):7} {c['killed']:6} {c['survived']:8} {c['no tests']:8} "
            f"{score:5.1f}%"
        )
    tested = totals["killed"] + totals["survived"]
    print(
        f"{'all':40} {totals['mutants']:7} {totals['killed']:6} {totals['survived']:8} "
        f"{totals['no tests']:8} {100 * totals['killed'] / max(tested, 1):5.1f}%"
    )
    with (dest / "survivors.txt").open("w") as out:
        for path, codes in found.items():
            funcs = _functions(dest / "mutants" / path)
            for name in sorted(n for n, code in codes.items() if code in SURVIVED):
                out.write(f"# {name}\n{_diff(funcs, name)}\n")
    print(f"\n{len(survivors)} survivors; their diffs: {dest / 'survivors.txt'}")
    return 1 if low else 0


def _functions(mutated: Path) -> dict[str, str]:
    """Each function mutmut wrote into the mutated module, by name, as source lines."""
    tree = ast.parse(mutated.read_text())
    lines = mutated.read_text().splitlines()
    out: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and "__mutmut_" in node.name:
            body = lines[node.lineno - 1 : node.end_lineno]
            out[node.name] = "\n".join(body[1:])  # without the def line (its name differs)
    return out


def _diff(funcs: dict[str, str], mutant: str) -> str:
    """The mutant's function against the original, as a unified diff."""
    short = mutant.rsplit(".", 1)[-1]
    orig = funcs.get(short.rsplit("__mutmut_", 1)[0] + "__mutmut_orig", "")
    lines = difflib.unified_diff(
        orig.splitlines(), funcs.get(short, "").splitlines(), lineterm="", n=0
    )
    return "\n".join(line for line in lines if not line.startswith(("---", "+++")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/reviewq-mutation"))
    parser.add_argument("--max-children", type=int, default=2)
    parser.add_argument("--rerun-survivors", action="store_true")
    parser.add_argument("--report", action="store_true", help="only report DIR's results")
    parser.add_argument("--min-score", type=float, default=0.0)
    parser.add_argument(
        "--module",
        action="append",
        metavar="PATH",
        help="mutate only this module of [tool.mutmut] only_mutate (repeatable; default all)",
    )
    args = parser.parse_args()
    dest: Path = args.dir
    only: list[str] | None = args.module
    unknown = sorted(set(only or []) - set(modules()))
    if unknown:
        parser.error(f"not in [tool.mutmut] only_mutate: {', '.join(unknown)}")
    if not args.report:
        if args.rerun_survivors:
            found = results(dest, only)
            names = [n for codes in found.values() for n, c in codes.items() if c in SURVIVED]
            refresh_tests(dest)
            if only:
                narrow(dest, only)
            print(f"re-running {len(names)} survivors against the current tests", flush=True)
            if names:
                mutmut(dest, "run", "--max-children", str(args.max_children), *names)
        else:
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir(parents=True)
            copy_tree(dest)
            if only:
                narrow(dest, only)
            mutmut(dest, "run", "--max-children", str(args.max_children))
    return report(dest, args.min_score, only)


if __name__ == "__main__":
    sys.exit(main())
