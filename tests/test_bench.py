"""`reviewq bench limiter` produces well-formed figures for every contender.

Behaviour only: a short run on a loaded CI machine says nothing about speed, so no
figure is compared with a number here.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from scheduler.bench.limiter import NAMES, Result, available, ratio_bars
from scheduler.bench.turns import _turns
from scheduler.cli.main import main


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """One short run through the real CLI (two rounds of turns), shared by the checks
    below.

    REDIS_URL (if set) is honoured, so the run uses the same server as the other tests.
    """
    result = CliRunner().invoke(
        main, ["bench", "limiter", "--json", "--seconds", "0.15", "--clients", "1", "--rounds", "2"]
    )
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.mark.slow
def test_json_has_exactly_the_documented_shape(report: dict[str, Any]) -> None:
    assert set(report) == {"results", "memory_bytes"}
    for row in report["results"]:
        assert set(row) == {"name", "clients", "ops_per_s", "p50_us", "p99_us"}


@pytest.mark.slow
def test_every_installed_contender_has_one_row_per_client_count(report: dict[str, Any]) -> None:
    names, skipped = available()
    assert sorted(r["name"] for r in report["results"]) == sorted(names)
    assert set(names) | set(skipped) == set(NAMES)
    assert {r["clients"] for r in report["results"]} == {1}


@pytest.mark.slow
def test_figures_are_positive_and_ordered(report: dict[str, Any]) -> None:
    for row in report["results"]:
        assert row["ops_per_s"] > 0
        assert 0 < row["p50_us"] <= row["p99_us"]


@pytest.mark.slow
def test_memory_is_measured_for_our_account(report: dict[str, Any]) -> None:
    memory = report["memory_bytes"]
    assert memory["reviewq"] > 0
    assert "evalsha" not in memory  # it keeps no state
    assert all(size > 0 for size in memory.values())


def _result(name: str, clients: int, ops: float, p50: float) -> Result:
    return Result(name, clients, ops, p50, p50 * 2)


def test_bars_are_computed_from_the_figures() -> None:
    results = [
        _result("reviewq", 1, ops=100.0, p50=30.0),
        _result("evalsha", 1, ops=300.0, p50=10.0),
        _result("limits-moving-window", 1, ops=100.0, p50=20.0),
        _result("reviewq", 4, ops=95.0, p50=40.0),
        _result("limits-moving-window", 4, ops=100.0, p50=30.0),
    ]
    bars = {label: (ratio, ok) for label, ratio, _, ok in ratio_bars(results)}
    assert bars["reviewq p50 / evalsha p50 (1 client)"] == (3.0, False)
    assert bars["reviewq ops/s / limits ops/s (1 client)"] == (1.0, True)
    assert bars["reviewq ops/s / limits ops/s (4 clients)"] == (0.95, True)


def test_a_missing_peer_gives_no_verdict() -> None:
    bars = ratio_bars([_result("reviewq", 1, ops=100.0, p50=30.0)])
    assert all(ratio is None and ok is None for _, ratio, _, ok in bars)


def test_client_counts_are_validated() -> None:
    result = CliRunner().invoke(main, ["bench", "limiter", "--clients", "0,2"])
    assert result.exit_code == 2
    assert "positive" in result.output


def test_turns_rotate_so_no_contender_always_follows_the_same_one() -> None:
    names = ["a", "b", "c", "d"]
    turns = _turns(names, 8)
    assert all(turns.count(n) == 8 for n in names)
    for name in names:
        places = {turns[r * 4 : r * 4 + 4].index(name) for r in range(8)}
        before = {turns[i - 1] for i in range(1, len(turns)) if turns[i] == name}
        assert places == {0, 1, 2, 3}, (name, turns)
        assert len(before) > 1, (name, turns)
