"""Patches as the fake GitHub reads them: which lines a review comment can anchor to,
and the small generated files a PR can be padded with."""

from __future__ import annotations

import re

from workers.review.changes import ChangedFile

__all__ = ["diff_lines", "synthetic_files"]

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")


def diff_lines(patch: str) -> tuple[frozenset[int], frozenset[int]]:
    """Lines a review comment can anchor to: (LEFT: old side, RIGHT: new side).

    Context lines are on both sides; `-` lines only on the left, `+` only on the right.
    """
    left: set[int] = set()
    right: set[int] = set()
    old = new = 0
    in_hunk = False
    for line in patch.splitlines():
        header = _HUNK.match(line)
        if header:
            old, new, in_hunk = int(header[1]), int(header[3]), True
        elif not in_hunk or line.startswith("\\"):
            continue
        elif line.startswith("-"):
            left.add(old)
            old += 1
        elif line.startswith("+"):
            right.add(new)
            new += 1
        else:
            left.add(old)
            right.add(new)
            old, new = old + 1, new + 1
    return frozenset(left), frozenset(right)


def synthetic_files(count: int, start: int = 0) -> tuple[ChangedFile, ...]:
    """`count` small modified files, each adding line 2 between two context lines."""
    return tuple(
        ChangedFile(
            filename=f"src/module_{i:05d}.py",
            additions=1,
            changes=1,
            patch=f"@@ -1,2 +1,3 @@\n import os\n+VALUE = {i}\n print(os.sep)",
        )
        for i in range(start, start + count)
    )
