"""What `inspect` adds for providers' own readings, credit plans and off-peak waits.

Per account: where and when each window's last provider reading came from (a response
header or a quota endpoint) and whether it moved the limiter; quota answers that held
no reading at all (Synthetic's `{}`); what the quota endpoint says the key is against
what the plan counts; and the learned input-token bound. Per deployment: each PR whose
messages wait for off-peak prices, why, until when, and about what it saves. Read
only, like the rest of the snapshot.
"""

from __future__ import annotations

from typing import cast

import redis as redis_lib
from pydantic import BaseModel

from scheduler.quota.readings import ProviderReadings
from scheduler.quota.tokenbound import InputBound
from scheduler.state.keys import Keys
from scheduler.state.records import decode_meta

__all__ = [
    "DeferredView",
    "DetectionView",
    "EmptyAnswerView",
    "InputBoundView",
    "ProviderView",
    "ReadingView",
    "deferred_views",
    "provider_view",
]


class ReadingView(BaseModel):
    window: str
    source: str
    at_ms: int
    age_ms: int
    used_milli: int
    limit_milli: int
    reset_at_ms: int | None
    moved: bool


class EmptyAnswerView(BaseModel):
    """A quota source answered with no reading: "no reading", never "nothing used"."""

    source: str
    at_ms: int
    age_ms: int


class DetectionView(BaseModel):
    """The key's kind by its quota answer (`credits`: Z.AI V3, `prompts`: V2) against
    the plan's; `suggested` is the preset to use when they differ."""

    metering: str
    configured: str
    level: str | None
    suggested: str | None
    at_ms: int
    mismatch: bool


class InputBoundView(BaseModel):
    model: str
    calls: int
    exceeded: int
    max_ratio: float
    factor: float


class ProviderView(BaseModel):
    readings: list[ReadingView] = []
    empty_answers: list[EmptyAnswerView] = []
    detection: DetectionView | None = None
    input_bound: list[InputBoundView] = []


class DeferredView(BaseModel):
    """A PR waiting for off-peak prices: since when, until when (`until_ms`, the off-peak
    start or its `max_defer` deadline), and about how many milli-credits that saves."""

    pr: str
    reason: str
    since_ms: int
    until_ms: int
    in_ms: int
    saved_milli: int


def provider_view(
    redis: redis_lib.Redis, account: str, key_prefix: str, now_ms: int
) -> ProviderView:
    found = ProviderReadings(redis, account, key_prefix=key_prefix).read()
    readings = [
        ReadingView(
            window=r.window,
            source=r.source,
            at_ms=r.at_ms,
            age_ms=max(0, now_ms - r.at_ms),
            used_milli=r.used_milli,
            limit_milli=r.limit_milli,
            reset_at_ms=r.reset_at_ms,
            moved=r.moved,
        )
        for _, r in sorted(found.windows.items())
    ]
    empty = [
        EmptyAnswerView(source=s, at_ms=at, age_ms=max(0, now_ms - at))
        for s, at in sorted(found.empty.items())
    ]
    d = found.detection
    detection = None
    if d is not None:
        detection = DetectionView(
            metering=d.metering,
            configured=d.configured,
            level=d.level,
            suggested=d.suggested,
            at_ms=d.at_ms,
            mismatch=d.mismatch,
        )
    bounds = [
        InputBoundView(
            model=b.model,
            calls=b.calls,
            exceeded=b.exceeded,
            max_ratio=b.max_ratio,
            factor=b.factor,
        )
        for b in InputBound(redis, account, key_prefix=key_prefix).stats()
    ]
    return ProviderView(
        readings=readings, empty_answers=empty, detection=detection, input_bound=bounds
    )


def deferred_views(redis: redis_lib.Redis, keys: Keys, now_ms: int) -> list[DeferredView]:
    """PRs waiting for off-peak, soonest first (entries whose wait is over are skipped)."""
    raw = cast(list[bytes], redis.zrange(keys.deferred, 0, -1))
    out = []
    for member in raw:
        pr = member.decode()
        meta = decode_meta(pr, cast(dict[bytes, bytes], redis.hgetall(keys.meta(pr))))
        if meta is None or meta.deferred_since_ms is None or meta.deferred_until_ms is None:
            continue
        out.append(
            DeferredView(
                pr=pr,
                reason=meta.deferred_reason or "",
                since_ms=meta.deferred_since_ms,
                until_ms=meta.deferred_until_ms,
                in_ms=max(0, meta.deferred_until_ms - now_ms),
                saved_milli=meta.deferred_saved_milli,
            )
        )
    return out
