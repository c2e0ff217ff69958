"""What earlier reviews of a PR covered, kept in Redis for incremental review.

One hash per PR (`Keys.seen`, expiring with the PR's other keys):
- `f:<path>`   a file whose content a posted review covered: `SeenFile`;
- `plan:<sha>` the content key of every file a head's plan planned or carried;
- `last`       the newest head whose review was posted, and where it was posted.

A file counts as covered only once the review that read it was posted: replies of a
head superseded before its review went out reached nobody, so their files are read
again. A plan writes `plan:<sha>` before its messages exist; `record_posted` turns it
into `f:` entries after the sink delivered (again after a rerun: it is idempotent).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import cast

import redis as redis_lib
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scheduler.state.keys import Keys
from workers.review.changes import ChangedFile
from workers.review.model import Review
from workers.review.plan import ReviewPlan

__all__ = [
    "Seen",
    "SeenFile",
    "content_key",
    "read_seen",
    "record_plan",
    "record_posted",
    "record_review",
]

_SHA = r"^[0-9a-f]{7,64}$"


class SeenFile(BaseModel):
    """A file as a posted review covered it: `blob` is its content key then (None
    when the forge gives none, as GitLab's diffs do), `head` the newest posted head at
    which it still had that content, `reviewed_at` the head whose review read it, and
    `location` where that review is."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    head: str = Field(pattern=_SHA)
    blob: str | None = Field(default=None, max_length=128)
    reviewed_at: str = Field(pattern=_SHA)
    location: str | None = Field(default=None, max_length=2000)


class Seen(BaseModel):
    """A PR's record: its covered files and the newest posted head (None: none yet)."""

    model_config = ConfigDict(frozen=True)

    files: dict[str, SeenFile] = Field(default_factory=dict)
    last: str | None = None

    def heads(self) -> list[str]:
        """Heads the covered files were last matched at, newest (`last`) first."""
        newest = [self.last] if self.last else []
        return list(dict.fromkeys([*newest, *sorted({f.head for f in self.files.values()})]))


def content_key(file: ChangedFile, *, local: bool) -> str | None:
    """What identifies a file's new content: the forge's blob id; for a local diff,
    which has none, a digest of the file's diff (the same diff on the same base is the
    same content). None: the forge gave nothing, so only a compare can tell."""
    if file.sha:
        return file.sha.lower()
    if local and file.patch is not None:
        digest = hashlib.sha1(f"{file.filename}\0{file.patch}".encode()).hexdigest()
        return f"diff:{digest}"
    return None


def read_seen(redis: redis_lib.Redis, keys: Keys, pr: str) -> Seen:
    """The record, skipping any entry that does not parse (it is then read again)."""
    raw = cast(dict[bytes, bytes], redis.hgetall(keys.seen(pr)))
    files: dict[str, SeenFile] = {}
    last = None
    for key, value in raw.items():
        name = key.decode(errors="replace")
        try:
            if name.startswith("f:"):
                files[name[2:]] = SeenFile.model_validate_json(value)
            elif name == "last":
                last = str(json.loads(value)["head"])
        except (ValidationError, ValueError, KeyError, TypeError):
            continue
    return Seen(files=files, last=last)


def record_plan(
    redis: redis_lib.Redis, keys: Keys, pr: str, head: str, content: Mapping[str, str | None]
) -> None:
    """Keep the content key of each file of `head`'s plan until its review is posted;
    plans of other heads are dropped (a head superseded never posts)."""
    key = keys.seen(pr)
    names = (k.decode(errors="replace") for k in cast(list[bytes], redis.hkeys(key)))
    stale = [k for k in names if k.startswith("plan:") and k != f"plan:{head}"]
    with redis.pipeline(transaction=False) as pipe:
        if stale:
            pipe.hdel(key, *stale)
        pipe.hset(key, f"plan:{head}", json.dumps(dict(content), separators=(",", ":")))
        pipe.expire(key, keys.pr_ttl_s)
        pipe.execute()


def record_posted(
    redis: redis_lib.Redis,
    keys: Keys,
    pr: str,
    head: str,
    *,
    reviewed: Iterable[str],
    carried: Iterable[str],
    location: str | None,
) -> int:
    """After `head`'s review was posted at `location`: the files it `reviewed` are
    covered by it, and the `carried` ones (unchanged since an earlier review) are
    matched at `head` from now on, still pointing at the review that read them.
    Returns how many entries were written; 0 when the head's plan is not recorded."""
    key = keys.seen(pr)
    raw = cast(bytes | None, redis.hget(key, f"plan:{head}"))
    if raw is None:
        return 0
    content: dict[str, str | None] = json.loads(raw)
    seen = read_seen(redis, keys, pr).files
    out: dict[str, str] = {}
    for path in reviewed:
        entry = SeenFile(head=head, blob=content.get(path), reviewed_at=head, location=location)
        out[f"f:{path}"] = entry.model_dump_json()
    for path in carried:
        old = seen.get(path)
        if old is not None:
            entry = old.model_copy(update={"head": head, "blob": content.get(path, old.blob)})
            out[f"f:{path}"] = entry.model_dump_json()
    out["last"] = json.dumps({"head": head, "location": location})
    with redis.pipeline(transaction=False) as pipe:
        pipe.hset(key, mapping=out)
        pipe.hdel(key, f"plan:{head}")
        pipe.expire(key, keys.pr_ttl_s)
        pipe.execute()
    return len(out) - 1


def record_review(
    redis: redis_lib.Redis,
    keys: Keys,
    review: Review,
    plan: ReviewPlan,
    answered: Iterable[int],
    location: str | None,
) -> int:
    """`record_posted` for a review the sink delivered: the files whose every message
    was `answered` (by index) count as covered by it; the carried ones stay covered by
    the review that read them. A file with any message unanswered is read again."""
    done = set(answered)
    reviewed = {p for m in plan.messages if m.index in done for p in m.files}
    missed = {p for m in plan.messages if m.index not in done for p in m.files}
    return record_posted(
        redis,
        keys,
        review.pr,
        review.head_sha,
        reviewed=sorted(reviewed - missed),
        carried=plan.scope.carried if plan.scope is not None else (),
        location=location,
    )
