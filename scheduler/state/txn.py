"""One transaction over one PR's state: read under WATCH, decide, write in MULTI/EXEC.

Every change to a PR or its messages goes through `run_txn`, so two workers (or a
worker and the waker) acting on one PR at once never lose each other's writes: the
loser's WATCH fails and it decides again on fresh state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar, cast

import redis as redis_lib
from redis.client import Pipeline

from scheduler.state.keys import Keys
from scheduler.state.records import MessageState, decode_messages, decode_meta, encode_meta

__all__ = ["PrTxn", "run_txn"]

T = TypeVar("T")


class PrTxn:
    """What one transaction read: the PR's meta and messages, writes queued later."""

    def __init__(self, pipe: Pipeline, keys: Keys, pr: str) -> None:
        self.pipe, self.keys, self.pr = pipe, keys, pr
        self.meta = decode_meta(pr, cast(dict[bytes, bytes], pipe.hgetall(keys.meta(pr))))
        self.msgs = decode_messages(cast(dict[bytes, bytes], pipe.hgetall(keys.msgs(pr))))
        self.dirty: set[str] = set()
        self.meta_dirty: set[str] = set()
        self.ops: list[Callable[[Pipeline], object]] = []

    def later(self, op: Callable[[Pipeline], object]) -> None:
        """A write, applied inside MULTI: under WATCH the pipeline runs commands at once."""
        self.ops.append(op)

    def put(self, mid: str, state: MessageState) -> None:
        self.msgs[mid] = state
        self.dirty.add(mid)


def run_txn(
    redis: redis_lib.Redis,
    keys: Keys,
    pr: str,
    body: Callable[[PrTxn], T],
    watch: Sequence[str] = (),
) -> T:
    """Run `body` under WATCH of the PR's keys (and `watch`); it reads, then decides.
    Writes it recorded are applied in one MULTI/EXEC; a concurrent change reruns it."""
    with redis.pipeline() as pipe:
        while True:
            try:
                watched = (keys.meta(pr), keys.msgs(pr), keys.backlog(pr), *watch)
                pipe.watch(*watched)  # type: ignore[no-untyped-call]
                txn = PrTxn(pipe, keys, pr)
                result = body(txn)
                pipe.multi()
                _flush(txn)
                pipe.execute()
                return result
            except redis_lib.WatchError:
                continue


def _flush(txn: PrTxn) -> None:
    pipe, keys, pr = txn.pipe, txn.keys, txn.pr
    for op in txn.ops:
        op(pipe)
    if txn.dirty:
        pipe.hset(keys.msgs(pr), mapping={m: txn.msgs[m].model_dump_json() for m in txn.dirty})
    if txn.meta is not None and txn.meta_dirty:
        pipe.hset(keys.meta(pr), mapping=encode_meta(txn.meta, txn.meta_dirty))
    if txn.dirty or txn.meta_dirty or txn.ops:
        for key in keys.pr_keys(pr):
            pipe.expire(key, keys.pr_ttl_s)
