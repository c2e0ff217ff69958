"""`bench report`'s credit-plan sections render each figure against issue 14's bars
(the runs themselves are documented commands: about 6 and 5 minutes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scheduler.bench.report import _credits, _offpeak, merge_sections, sections
from scheduler.sim.compare import offpeak_figures


def _window(name: str, top: float, limit: float, spendable: float) -> dict[str, Any]:
    return {"name": name, "limit": limit, "spendable": spendable, "max_used_in_any_window": top}


def _result(per_message: float, p95: float, deferrals: int) -> dict[str, Any]:
    credits = {
        "provider_total": per_message * 100,
        "reviewq_settled_total": per_message * 100,
        "difference_pct": 0.0,
        "per_message": per_message,
        "input_bound": [
            {"model": "glm-5.1", "calls": 2000, "exceeded": 1, "factor": 2.04, "max_ratio": 1.94}
        ],
        "deferrals": deferrals,
    }
    account = {
        "name": "zai",
        "plan": "zai-lite-v3",
        "provider_429": 0,
        "windows": [
            _window("credits_5h", 1896.2, 2000, 1900),
            _window("credits_week", 9000, 10_000, 9500),
        ],
        "credits": credits,
    }
    big = {"id": "acme/big#1", "files": 40, "arrived_s": 7200.0, "first_started_s": 21600.0}
    big |= {"finished_s": 30000.0, "deferred_s": 14400.0 if deferrals else 0.0}
    return {
        "accounts": [account],
        "prs": [big],
        "messages_done": 100,
        "messages_total": 100,
        "not_finished": [],
        "small_pr_wait_p50_s": 5.0,
        "small_pr_wait_p95_s": p95,
    }


def test_the_credit_section_says_met_or_missed_per_bar() -> None:
    text = "\n".join(_credits(_result(10.0, 60.0, 0)))
    assert "provider 429s 0 (bar 0)" in text
    assert "credits_5h: max used in any window 1896.2 of limit 2000, 0.998 x" in text
    assert "credits_week: max used in any window 9000 of limit 10000, 0.947 x" in text
    assert "(bar <= limit and >= 0.95 x spendable): MISSED" in text  # 9,000 < 9,025
    assert "0.0% (bar within 1 %): met" in text
    assert "exceeded on 1 of 2000 calls (bar < 0.1 %): met" in text


def test_the_offpeak_section_compares_the_two_runs() -> None:
    figures = offpeak_figures(_result(3.1, 74.0, 5), _result(6.0, 104.0, 0))
    assert figures["credits_per_message_saving"] == 0.4833
    assert figures["bars"]["saving_met"] and figures["bars"]["small_wait_met"]
    text = "\n".join(_offpeak(figures))
    assert "| with off-peak | 310 | 100 | 3.1 | 5.0 / 74.0 | 5 | 0 |" in text
    assert "48.3% lower (bar >= 35%): met" in text
    assert "acme/big#1 14400" in text
    worse = offpeak_figures(_result(3.1, 120.0, 5), _result(6.0, 104.0, 0))
    assert not worse["bars"]["small_wait_met"]  # 120 > 104 x 1.1


def test_both_sections_are_in_the_report() -> None:
    named = sections(Path("chaos.xml"))
    assert named["credits"].shown == "reviewq simulate scenarios/zai-v3-binding.yaml --json"
    assert named["offpeak"].shown.startswith("reviewq bench offpeak")


def _with_small(per_message: float, waits: list[float]) -> dict[str, Any]:
    """A run whose small PRs (5 files) waited `waits`, its own p95 set apart (as if
    one run's figure), so the test tells pooled from per-run."""
    run = _result(per_message, -1.0, 1)
    run["prs"] = run["prs"] + [
        {"id": f"acme/web#{i}", "files": 5, "wait_s": w} for i, w in enumerate(waits)
    ]
    return run


def test_several_runs_are_judged_on_their_pooled_waits() -> None:
    """Pooled p95 of 2 x 20 waits (0..19 s each side, an outlier in one run):
    each pair's own ratio is kept beside it, the bar reads the pooled one."""
    base = [float(i) for i in range(20)]
    on = [_with_small(3.0, base), _with_small(3.2, [*base[:-1], 40.0])]
    off = [_with_small(6.0, base), _with_small(6.0, base)]
    figures = offpeak_figures(on, off)
    assert figures["runs"] == 2
    assert figures["small_pr_wait_p95_ratio_by_run"] == [1.0, 1.0]  # -1 / -1 as set
    pooled_on = sorted([*base, *base[:-1], 40.0])
    assert figures["with_offpeak"]["small_pr_waits_s"] == pooled_on
    # nearest rank: the 38th of 40 pooled waits, where one run alone would say 18 or 19
    assert figures["without_offpeak"]["small_pr_wait_p95_s"] == 18.0
    assert figures["with_offpeak"]["small_pr_wait_p95_s"] == 18.0
    assert figures["with_offpeak"]["credits_per_message"] == 3.1  # 620 credits, 200 done
    assert figures["with_offpeak"]["runs_p95_s"] == [-1.0, -1.0]
    assert figures["bars"]["small_wait_met"]
    text = "\n".join(_offpeak(figures))
    assert "on the pooled waits of 2 runs a side; each pair's own: 1.0, 1.0" in text


def test_only_some_sections_replace_theirs_and_keep_the_rest() -> None:
    """`bench report --only offpeak` on an existing page: that section is replaced in
    place, a section the page lacked is added at the end, the rest is kept as it was."""
    page = "# head\n\nintro\n\n## A\n\nold a\n\n## B\n\nold b\n"
    merged = merge_sections(page, [["## B", "", "new b", ""], ["## C", "", "new c", ""]])
    assert merged == "# head\n\nintro\n\n## A\n\nold a\n\n## B\n\nnew b\n\n## C\n\nnew c\n"
    assert merge_sections(page, []) == page
