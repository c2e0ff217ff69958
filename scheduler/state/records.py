"""What Redis remembers about each PR and each of its messages, and how to read it.

Every message has one `MessageState`, stored as JSON in its PR's `:m` hash, and that
record is the truth: RQ jobs are only tokens that ask a worker to look at it. A job
whose dispatch number no longer matches its message is stale and does nothing, which
is what makes RQ's at-least-once delivery safe.

Keys, for a prefix `P` (one per deployment, `reviewq:<queue>` by default):
- `P:pr:<pr>`          HASH  the PR's meta (`PrMeta` fields, JSON where structured);
- `P:pr:<pr>:m`        HASH  message id `<gen>.<n>` -> `MessageState` JSON;
- `P:pr:<pr>:body`     HASH  message id -> the planned message (text and files);
- `P:pr:<pr>:reply`    HASH  message id -> the parsed reply of a done message;
- `P:pr:<pr>:backlog`  LIST  ids of pending messages, in the order they will run;
- `P:prs`              ZSET  PR -> arrival ms: every PR the deployment knows;
- `P:line:<account>`   ZSET  member -> place in line: messages waiting for an account;
- `P:line-due`         ZSET  account -> when its line's head should be tried again;
- `P:timed`            ZSET  member -> due ms: messages waiting for a time of their own;
- `P:running`          ZSET  member -> claim deadline: messages a worker is calling;
- `P:queued`           ZSET  `<member>@<dispatch>` -> 0, or since when (Redis ms) its
                             job looks lost: runs on the queue, not yet claimed;
- `P:wake`             LIST  wake-ups for the waker (account names whose slot freed);
- `P:freed`            ZSET  account -> when (Redis ms) a slot of it last freed.
A *member* is `<pr>|<message id>`. PR keys expire `PR_TTL_S` after the last change.

`<pr>` in a key name is the PR id with every character outside a small safe set
percent-encoded (`key_part`): a PR id is text from outside (a webhook, the command
line), and `acme/api#1:m` must not name the message hash of `acme/api#1`. The safe set
covers every forge id (`owner/repo#N`, `group/sub/project!N`), so their keys read as
the ids do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis as redis_lib
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "PR_TTL_S",
    "REVIEWED_KEPT",
    "TERMINAL",
    "Keys",
    "MessageState",
    "MessageStatus",
    "PrMeta",
    "PrView",
    "Retention",
    "key_part",
    "queued_entry",
    "read_pr",
    "split_member",
    "split_queued",
]

MessageStatus = Literal["pending", "queued", "running", "waiting", "done", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"done", "failed", "cancelled"})
# Long enough for a person to read a finished PR's state; every write renews it.
PR_TTL_S = 7 * 86_400
REVIEWED_KEPT = 20
_JSON_FIELDS = frozenset({"ref", "plan", "estimate", "reviewed"})


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


_UNSAFE = re.compile(r"[^A-Za-z0-9/#!._~=+,@-]")


def key_part(text: str) -> str:
    """`text` made safe for one segment of a key name: a one-to-one encoding (`%` is
    itself encoded), so two ids never share a key, and no id can add a `:segment`,
    a `{hash tag}` or whitespace to a key."""
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m[0].encode()), text)


class Keys:
    """Key names under one prefix; a test or a `simulate` run uses its own prefix."""

    def __init__(self, prefix: str, pr_ttl_s: int = PR_TTL_S) -> None:
        self.prefix = prefix
        self.pr_ttl_s = pr_ttl_s
        self.prs = f"{prefix}:prs"
        self.line_due = f"{prefix}:line-due"
        self.timed = f"{prefix}:timed"
        self.running = f"{prefix}:running"
        self.queued = f"{prefix}:queued"
        self.wake = f"{prefix}:wake"
        self.freed = f"{prefix}:freed"
        self.vtime = f"{prefix}:vtime"
        self.trace = f"{prefix}:trace"
        self.waker_lock = f"{prefix}:waker-lock"

    def meta(self, pr: str) -> str:
        return f"{self.prefix}:pr:{key_part(pr)}"

    def msgs(self, pr: str) -> str:
        return f"{self.prefix}:pr:{key_part(pr)}:m"

    def body(self, pr: str) -> str:
        return f"{self.prefix}:pr:{key_part(pr)}:body"

    def reply(self, pr: str) -> str:
        return f"{self.prefix}:pr:{key_part(pr)}:reply"

    def backlog(self, pr: str) -> str:
        return f"{self.prefix}:pr:{key_part(pr)}:backlog"

    def line(self, account: str) -> str:
        return f"{self.prefix}:line:{key_part(account)}"

    def pr_keys(self, pr: str) -> list[str]:
        return [self.meta(pr), self.msgs(pr), self.body(pr), self.reply(pr), self.backlog(pr)]


def queued_entry(member: str, dispatch: int) -> str:
    """A `P:queued` entry names the dispatch too, so removing an old run's entry can
    never remove the next run's."""
    return f"{member}@{dispatch}"


def split_queued(entry: str) -> tuple[str, int]:
    member, _, dispatch = entry.rpartition("@")
    return member, int(dispatch)


def split_member(member: str) -> tuple[str, str]:
    """`<pr>|<message id>` -> (pr, message id); PR ids never contain '|'."""
    pr, sep, mid = member.rpartition("|")
    if not sep or not pr or not mid:
        raise ValueError(f"not a message member: {member!r}")
    return pr, mid


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def decode_meta(pr: str, raw: Mapping[bytes, bytes]) -> PrMeta | None:
    if not raw:
        return None
    data: dict[str, Any] = {"pr": pr}
    for key, value in raw.items():
        name, text = key.decode(), value.decode()
        data[name] = json.loads(text) if name in _JSON_FIELDS else text
    for name in ("first_started_ms", "finished_ms", "error"):
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
