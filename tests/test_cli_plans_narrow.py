"""`reviewq plans` on an 80-column console: every preset whole, nothing folded to slivers."""

from __future__ import annotations

from click.testing import CliRunner
from rich.cells import cell_len

from scheduler.cli.main import main
from scheduler.quota.plans import PRESETS


def _plans(columns: int) -> str:
    env = {"COLUMNS": str(columns), "REVIEWQ_CONFIG": "", "REDIS_URL": ""}
    result = CliRunner().invoke(main, ["plans"], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_plans_fit_80_columns_with_every_field_labelled() -> None:
    out = _plans(80)
    lines = out.splitlines()
    assert max(cell_len(line) for line in lines) <= 80
    assert "…" not in out  # rich's mark for a word cut short
    for plan in PRESETS.values():
        # Each name and date stands whole at the start of its cell.
        assert any(line.startswith(f"│ {plan.name} ") for line in lines), plan.name
        assert f"as of {plan.as_of.isoformat()}" in out
    for label in ("windows: ", "concurrency: ", "model costs: ", "source: "):
        assert out.count(label) == len(PRESETS), label
    assert "500 requests / 5h rolling" in out
    assert "28,000 credits / 5h rolling" in out


def test_plans_keep_the_eight_columns_on_a_wide_console() -> None:
    out = _plans(250)
    header = next(line for line in out.splitlines() if "Plan" in line and "Provider" in line)
    for column in ("On sale", "Windows", "Concurrency", "Model costs", "Source", "As of"):
        assert column in header
