"""The JSON-lines file a fake forge records its API exchanges in (the GitHub and GitLab
fakes' `exchanges` modules say what goes in a line and who checks it)."""

from __future__ import annotations

import itertools
import json
import os
import threading
from pathlib import Path
from typing import Any, Self

__all__ = ["JsonLinesLog"]

_SEQUENCE = itertools.count()


class JsonLinesLog:
    """One JSON-lines file per fake; a line is written whole, under a lock, so the
    threads of one fake never interleave and each fake (of any process) has its own
    file: `<prefix>-<pid>-<n>.jsonl`."""

    prefix = "exchanges"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    @classmethod
    def open(cls, directory: str | None) -> Self | None:
        """A new file in `directory`; None when recording is off (no directory)."""
        if not directory:
            return None
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder / f"{cls.prefix}-{os.getpid()}-{next(_SEQUENCE)}.jsonl")

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record)
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
