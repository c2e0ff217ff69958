"""Fixtures and options of the chaos suite (see `harness.py` for what a run is).

- `pytest -m chaos tests/chaos`: the quick scenarios, which plain `pytest` (CI) runs too;
- `REVIEWQ_CHAOS=1`: also the long ones (marked `chaos_long`), skipped otherwise;
- `REVIEWQ_CHAOS_RUNS=3`: every scenario three times, as whole rounds (every scenario's
  first run, then every second run, ...), so "three runs in a row" is one command;
- `REVIEWQ_CHAOS_RECORD=FILE`: append each run's figures to FILE, one JSON per line.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scheduler.sandbox.localredis import LocalRedis

RUNS_ENV = "REVIEWQ_CHAOS_RUNS"
LONG_ENV = "REVIEWQ_CHAOS"


def _runs() -> int:
    return max(1, int(os.environ.get(RUNS_ENV, "1") or 1))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "chaos_run" in metafunc.fixturenames:
        runs = range(1, _runs() + 1)
        metafunc.parametrize("chaos_run", runs, ids=[f"run{n}" for n in runs])


def _run_of(item: pytest.Item) -> int:
    callspec = getattr(item, "callspec", None)
    return int(callspec.params.get("chaos_run", 0)) if callspec is not None else 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _runs() > 1:  # rounds: every scenario's run 1, then every run 2, ...
        items.sort(key=_run_of)
    if os.environ.get(LONG_ENV, "").strip() not in ("", "0"):
        return
    skip = pytest.mark.skip(reason=f"a long chaos scenario: set {LONG_ENV}=1 to run it")
    for item in items:
        if item.get_closest_marker("chaos_long") is not None:
            item.add_marker(skip)


@pytest.fixture
def chaos_redis(local_redis_factory: object, tmp_path: Path) -> LocalRedis:
    """A private Redis per scenario (never the session's, since faults flush, kill and
    restart it), with AOF `everysec` as production runs it, on a fixed port."""
    factory = local_redis_factory
    server: LocalRedis = factory(appendonly=True, data_dir=tmp_path / "redis")  # type: ignore[operator]
    return server
