"""The diffs a scenario's PRs carry: new files of a chosen number of lines.

`uniform` lines are all alike (`x = 1  # rrr...`), so a message's size follows the
scenario's numbers exactly. `mixed` gives each file two of a few code styles (calls,
conditions with symbols, comments, logging, dict literals...), alternating by a seeded
draw, so two prompts of one length differ in tokens as real code does: what a credit
plan's learned input bound (`scheduler.quota.tokenbound`) has to cope with.
"""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from scheduler.sim.scenario import PrSpec

__all__ = ["DiffStyle", "diff_lines", "synthetic_diff"]

DiffStyle = Literal["uniform", "mixed"]

_STYLES = (
    "result = compute_value(alpha, beta)  # adjust the offset",
    "if (x[i] != y[j] && flag) { return -1; } else { k++; }",
    "// The caller owns this buffer and must release it later",
    'logger.info("processed %d items in %.2fs", count, elapsed)',
    "for key, value in sorted(mapping.items()):",
    'data = {"id": 12345, "name": "widget", "tags": ["a", "b"]}',
    "    total += price * quantity - discount_for(customer)",
    "return [item for item in items if item.enabled and not item.hidden]",
)


def diff_lines(slug: str, index: int, lines: int, line_chars: int, style: DiffStyle) -> str:
    """The `+` lines of file `index` of the PR named `slug`: the same every run."""
    if style == "uniform":
        body = "x = 1  # " + "r" * max(0, line_chars - 10)
        return "".join(f"+{body}\n" for _ in range(lines))
    seed = int.from_bytes(hashlib.sha256(f"{slug}:{index}".encode()).digest()[:8], "big")
    rng = random.Random(seed)
    pair = rng.sample(_STYLES, 2)
    return "".join(f"+    {pair[rng.random() < 0.5][:line_chars]}\n" for _ in range(lines))


def synthetic_diff(pr: PrSpec, line_chars: int, style: DiffStyle = "uniform") -> str:
    """A unified diff of `files` new files of `lines_per_file` lines, each line about
    `line_chars` long, so message sizes (and thus counts) follow the scenario; `style`
    picks what the lines say (`scheduler.sim.diffs`)."""
    slug = pr.id.replace("/", "_").replace("#", "_")
    parts = []
    for i in range(pr.files):
        path = f"src/{slug}/module_{i:04d}.py"
        lines = diff_lines(slug, i, pr.lines_per_file, line_chars, style)
        parts.append(
            f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n"
            f"@@ -0,0 +1,{pr.lines_per_file} @@\n{lines}"
        )
    return "".join(parts)
