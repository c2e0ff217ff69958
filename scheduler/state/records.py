"""What Redis remembers about each PR and each of its messages, and how to read it.

Every message has one `MessageState`, stored as JSON in its PR's `:m` hash, and that
record is the truth: RQ jobs are only tokens that ask a worker to look at it. A job
whose dispatch number no longer matches its message is stale and does nothing, which
is what makes RQ's at-least-once delivery safe.

The keys they are kept at are named in `scheduler.state.keys`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis as redis_lib
from pydantic import BaseModel, ConfigDict, Field

from scheduler.state.keys import PR_TTL_S, Keys

__all__ = [
    "REVIEWED_KEPT",
    "TERMINAL",
    "MessageState",
    "MessageStatus",
    "PrMeta",
    "PrView",
    "Retention",
    "decode_messages",
    "decode_meta",
    "encode_meta",
    "read_pr",
]

MessageStatus = Literal["pending", "queued", "running", "waiting", "done", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"done", "failed", "cancelled"})
REVIEWED_KEPT = 20
_JSON_FIELDS = frozenset({"ref", "plan", "estimate", "reviewed"})
# Meta fields stored as "" when None.
_OPTIONAL_FIELDS = (
    "first_started_ms",
    "finished_ms",
    "error",
    "deferred_since_ms",
    "deferred_until_ms",
    "deferred_reason",
)


@dataclass(frozen=True, slots=True)
class Retention:
    """How long Redis keeps what a finished PR leaves: its state (`pr_s` after the last
    change, and its entry in `P:prs` that long after arrival), RQ's job results and
    failed jobs, and reviews kept by the `log` sink. Memory is bounded by traffic over
    these spans, never by history; `simulate` divides them by its time scale like every
    other duration."""

    pr_s: int = PR_TTL_S
    result_s: int = 3_600
    failure_s: int = 7 * 86_400
    review_s: int = 30 * 86_400

    def within(self, span_s: int) -> Retention:
        """Every span cut to at most `span_s`: a `simulate` scenario's `retention`, so
        a week-long soak reaches its memory plateau within its warm-up day."""
        spans = (self.pr_s, self.result_s, self.failure_s, self.review_s)
        return Retention(*(min(v, span_s) for v in spans))

    def scaled(self, time_scale: float) -> Retention:
        spans = (self.pr_s, self.result_s, self.failure_s, self.review_s)
        return Retention(*(max(1, round(v / time_scale)) for v in spans))


class MessageState(BaseModel):
    """One message's place in its life. `retries` counts error retries only: waiting
    for budget is counted in `waits` and never uses the retry budget."""

    model_config = ConfigDict(extra="ignore")

    gen: int
    status: MessageStatus = "pending"
    reason: str | None = None
    retry_at_ms: int | None = None
    account: str | None = None
    cost: dict[str, int] = Field(default_factory=dict)
    dispatch: int = 0
    retries: int = 0
    waits: int = 0
    runs: int = 0
    lost: int = 0  # runs whose claim lapsed: the worker died or hung
    order: float | None = None  # ticket: arrival order, the line's order under fifo
    tag: float | None = None  # start tag: the line's order under fair
    line: str | None = None
    started_ms: int | None = None
    finished_ms: int | None = None
    stale: bool = False

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class PrMeta(BaseModel):
    """A PR as admission sees it. `gen` grows with every new head SHA; messages of an
    older generation are finished or cancelled, never started again."""

    model_config = ConfigDict(extra="ignore")

    pr: str
    ref: dict[str, Any] = Field(default_factory=dict)
    gen: int = 0
    head_sha: str = ""
    status: Literal["planning", "active", "finishing", "done", "cancelled"] = "planning"
    arrived_ms: int = 0
    first_started_ms: int | None = None
    finished_ms: int | None = None
    total: int = 0
    inflight: int = 0
    cap: int = 0
    files: int = 0
    plan: dict[str, Any] = Field(default_factory=dict)
    estimate: dict[str, int] = Field(default_factory=dict)  # milli-units per window
    tag: float = 0.0
    error: str | None = None
    # Heads whose review was sent, newest last (at most `REVIEWED_KEPT`): a replayed
    # "opened" or a reopen at one of them does not pay for the same review again.
    reviewed: list[str] = Field(default_factory=list)
    # Off-peak scheduling (`scheduler.admission.offpeak`): a person asked for this head
    # now; the current deferral (since, until, why, about how many milli-credits it
    # saves); and the time this head spent deferred in earlier deferrals.
    now: bool = False
    deferred_since_ms: int | None = None
    deferred_until_ms: int | None = None
    deferred_reason: str | None = None
    deferred_saved_milli: int = 0
    deferred_ms: int = 0


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def decode_meta(pr: str, raw: Mapping[bytes, bytes]) -> PrMeta | None:
    if not raw:
        return None
    data: dict[str, Any] = {"pr": pr}
    for key, value in raw.items():
        name, text = key.decode(), value.decode()
        data[name] = json.loads(text) if name in _JSON_FIELDS else text
    for name in _OPTIONAL_FIELDS:
        if data.get(name) == "":
            data[name] = None
    return PrMeta.model_validate(data)


def encode_meta(meta: PrMeta, fields: set[str] | None = None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in meta.model_dump(exclude={"pr"}).items():
        if fields is not None and name not in fields:
            continue
        if name in _JSON_FIELDS:
            out[name] = json.dumps(value, separators=(",", ":"))
        else:
            out[name] = "" if value is None else str(value)
    return out


def decode_messages(raw: Mapping[bytes, bytes]) -> dict[str, MessageState]:
    return {k.decode(): MessageState.model_validate_json(v) for k, v in raw.items()}


class PrView(BaseModel):
    """A PR and its messages, read in one round trip, for the CLI and `simulate`."""

    meta: PrMeta
    messages: dict[str, MessageState]

    def current(self) -> dict[str, MessageState]:
        return {k: m for k, m in self.messages.items() if m.gen == self.meta.gen}

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for state in self.current().values():
            out[state.status] = out.get(state.status, 0) + 1
        return out


def read_pr(redis: redis_lib.Redis, keys: Keys, pr: str) -> PrView | None:
    with redis.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.meta(pr))
        pipe.hgetall(keys.msgs(pr))
        raw_meta, raw_msgs = cast(list[dict[bytes, bytes]], pipe.execute())
    meta = decode_meta(pr, raw_meta)
    if meta is None:
        return None
    return PrView(meta=meta, messages=decode_messages(raw_msgs))
