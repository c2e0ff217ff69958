"""Incremental review: after a push, plan only the files whose content changed since
the review that read them.

A file is left out when its content is the one a posted review covered
(`workers.review_record`): the same blob id (GitHub lists one per file; a local diff
is matched by its diff text), or, where the forge gives no blob (GitLab), no change
between the head it was last matched at and the new head in a direct comparison of
the two trees (`Compared`). That holds the same after a force push or a rebase: what
counts is content, not history. Everything else is reviewed: a file never reviewed, a
file whose review failed, a file that no comparison can vouch for.

The review then says what it covers and links the earlier reviews for the rest
(`workers.review.scope.ReviewScope`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from workers.review.changes import ChangedFile
from workers.review.scope import EarlierReview, ReviewScope
from workers.review_record import Seen, SeenFile, content_key

__all__ = ["Compared", "Selection", "select"]

# Earlier reviews a review links to at most; the scope names the rest by count.
MAX_EARLIER = 3


@dataclass(frozen=True, slots=True)
class Compared:
    """What the forge says of the way from an earlier head to the new one: the paths
    whose content differs (None: it could not tell, e.g. the old commit is gone), and
    whether the history diverged (None: unknown)."""

    changed: frozenset[str] | None
    diverged: bool | None = None


@dataclass(frozen=True, slots=True)
class Selection:
    """The files to plan, the content key of every file of the head, and the scope
    the review states (None for a full review)."""

    review: list[ChangedFile]
    content: dict[str, str | None] = field(default_factory=dict)
    scope: ReviewScope | None = None
    carried: tuple[str, ...] = ()


def select(
    files: Sequence[ChangedFile],
    seen: Seen | None,
    compared: Mapping[str, Compared],
    *,
    local: bool,
) -> Selection:
    """Split `files` into those to review and those an earlier review covers; `seen`
    None (incremental off, or a full review asked for) reviews them all."""
    content = {f.filename: content_key(f, local=local) for f in files}
    if seen is None or not seen.files or seen.last is None:
        return Selection(list(files), content)
    review: list[ChangedFile] = []
    carried: list[tuple[str, SeenFile]] = []
    for file in files:
        entry = seen.files.get(file.filename)
        if entry is not None and _unchanged(file, entry, content[file.filename], compared):
            carried.append((file.filename, entry))
        else:
            review.append(file)
    diverged = any(c.diverged for c in compared.values())
    scope = ReviewScope(
        since=seen.last,
        covered=tuple(sorted(f.filename for f in review)),
        carried=tuple(sorted(p for p, _ in carried)),
        earlier=_earlier(e for _, e in carried),
        diverged=diverged,
    )
    return Selection(review, content, scope, scope.carried)


def _unchanged(
    file: ChangedFile, entry: SeenFile, key: str | None, compared: Mapping[str, Compared]
) -> bool:
    """Whether `file` has the content its earlier review read. A blob decides when
    both sides have one; else the comparison from the head the entry was matched at."""
    if key is not None and entry.blob is not None:
        return key == entry.blob
    found = compared.get(entry.head)
    if found is None or found.changed is None:
        return False
    names = {file.filename, file.previous_filename or file.filename}
    return not names & found.changed


def _earlier(entries: Iterable[SeenFile]) -> tuple[EarlierReview, ...]:
    """The reviews that read the carried files, the one reading most of them first."""
    counts: dict[tuple[str, str | None], int] = {}
    for entry in entries:
        key = (entry.reviewed_at, entry.location)
        counts[key] = counts.get(key, 0) + 1
    ranked = sorted(counts, key=lambda k: (-counts[k], k[0]))[:MAX_EARLIER]
    return tuple(EarlierReview(head=h, location=loc) for h, loc in ranked)
