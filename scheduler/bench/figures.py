"""What `reviewq bench limiter` measured, and its bars with PASS/MISS: data only.

A row per contender and client count (`Result`), the memory one account holds, and
the ratios of our figures to the floor's and a peer's, each against its bar.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Bar", "BenchReport", "Result", "ratio_bars"]

Bar = tuple[str, float | None, str, bool | None]  # (label, ratio, bar, passed)


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    clients: int
    ops_per_s: float
    p50_us: float
    p99_us: float


@dataclass(frozen=True, slots=True)
class BenchReport:
    results: list[Result]
    memory_bytes: dict[str, int]

    @property
    def bars(self) -> list[Bar]:
        return ratio_bars(self.results)

    def to_json(self) -> dict[str, Any]:
        return {"results": [asdict(r) for r in self.results], "memory_bytes": self.memory_bytes}


def ratio_bars(results: list[Result]) -> list[Bar]:
    """(label, ratio, bar, passed); ratio and passed are None when a contender is absent."""
    by = {(r.name, r.clients): r for r in results}

    def bar(label: str, n: int, peer: str, field: str, limit: float, at_most: bool) -> Bar:
        ours, theirs = by.get(("reviewq", n)), by.get((peer, n))
        if ours is None or theirs is None:
            return (label, None, f"{'<=' if at_most else '>='} {limit}", None)
        ratio = getattr(ours, field) / getattr(theirs, field)
        ok = ratio <= limit if at_most else ratio >= limit
        return (label, ratio, f"{'<=' if at_most else '>='} {limit}", ok)

    bars = [bar("reviewq p50 / evalsha p50 (1 client)", 1, "evalsha", "p50_us", 1.5, True)]
    for n in sorted({r.clients for r in results}):
        label = f"reviewq ops/s / limits ops/s ({n} client{'s' if n > 1 else ''})"
        bars.append(bar(label, n, "limits-moving-window", "ops_per_s", 0.9, False))
    return bars
