"""Large machine-formatted data: summarised in a review, not read line by line.

A script that refreshes test fixtures (captured API answers as JSON, recorded pages,
YAML cassettes) can change hundreds of files at once: in python-poetry/poetry,
`tests/repositories/fixtures/pypi.org/**` took 44 % of a corpus's review messages,
though no reviewer reads captured JSON line by line. Such files are listed with their
reason and share one summary message, so they cost a small fixed amount.

Two cases, both on data formats only, never on code:
- one data file with at least `FILE_LINES` changed lines (JSON, CSV, XML anywhere;
  YAML, HTML, text and `*.lock` only in a fixtures directory, since YAML outside one is
  usually hand-written configuration such as CI workflows, and lockfiles outside test
  trees are skipped as lockfiles anyway);
- a batch: at least `BATCH_FILES` data files in fixture directories whose changes
  add up to at least `BATCH_LINES` lines, which is what a regeneration script does.
Fixture directories follow Linguist's vendor.yml "Test fixtures" and "Go fixtures"
entries (`tests?/fixtures/`, `specs?/fixtures/`, `testdata/`), with the usual
`__fixtures__/` and VCR `cassettes/`.

The thresholds are named here rather than configured: they were chosen on the corpus
of docs/skiprules.md (2026-12-07), where no hand-written file came near them.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from workers.review.changes import ChangedFile

__all__ = ["BATCH_FILES", "BATCH_LINES", "FILE_LINES", "summarised_data"]

FILE_LINES = 300
BATCH_FILES = 10
BATCH_LINES = 300
_DATA_ANYWHERE = frozenset({".json", ".jsonl", ".ndjson", ".geojson", ".csv", ".tsv", ".xml"})
_DATA_IN_FIXTURES = _DATA_ANYWHERE | {".yaml", ".yml", ".html", ".htm", ".txt", ".lock"}
_FIXTURE_DIRS = frozenset({"fixtures", "__fixtures__", "testdata", "cassettes"})
# Manifests and tool configuration: written by hand even when long.
_HAND_WRITTEN = frozenset(
    {"package.json", "composer.json", "deno.json", "deno.jsonc", "app.json", "manifest.json"}
    | {"renovate.json", "vercel.json", "turbo.json", "biome.json", "lerna.json", "nx.json"}
)


def summarised_data(files: Sequence[ChangedFile]) -> dict[str, str]:
    """{path: reason} for the files among `files` to summarise rather than review."""
    out: dict[str, str] = {}
    batch = [f for f in files if _kind(f.filename) == "fixture"]
    batch_lines = sum(_changed(f) for f in batch)
    is_batch = len(batch) >= BATCH_FILES and batch_lines >= BATCH_LINES
    for file in files:
        kind = _kind(file.filename)
        if kind is None:
            continue
        label = _label(file.filename)
        if _changed(file) >= FILE_LINES:
            out[file.filename] = f"large {label} data ({_changed(file)} changed lines)"
        elif kind == "fixture" and is_batch:
            out[file.filename] = (
                f"{label} fixture, one of {len(batch)} data fixtures changed together "
                f"({batch_lines} changed lines)"
            )
    return out


def _changed(file: ChangedFile) -> int:
    return file.additions + file.deletions


def _kind(path: str) -> str | None:
    """ "fixture" for data in a fixture directory, "data" for data elsewhere, else None."""
    name = posixpath.basename(path)
    ext = posixpath.splitext(name)[1].lower()
    dirs = path.split("/")[:-1]
    if any(d.lower() in _FIXTURE_DIRS for d in dirs) and ext in _DATA_IN_FIXTURES:
        return "fixture"
    if name in _HAND_WRITTEN or name.startswith(("tsconfig", "jsconfig", ".")):
        return None
    if ".github" in dirs or ext not in _DATA_ANYWHERE:
        return None
    return "data"


def _label(path: str) -> str:
    return posixpath.splitext(path)[1].lstrip(".").upper() or "data"
