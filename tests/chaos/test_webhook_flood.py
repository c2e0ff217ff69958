"""Chaos 6: a webhook flood. 10,000 signed deliveries reach a real `reviewq serve`
process, 10 % of them redeliveries (the same delivery id again, sometimes while the
first is still in flight) and 5 % with a forged signature, shuffled, over 8
connections. Exactly the valid unique ones are enqueued: one plan job each, and no
PR of a forged delivery is ever registered.
"""

from __future__ import annotations

import random
import secrets
import uuid

import pytest
import redis as redis_py

from scheduler.admission import Admission
from scheduler.bench.webhook import _drive, _run, _serve_process, deliveries
from scheduler.state.jobs import review_queue

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(600)]

TOTAL = 10_000
REDELIVERED = TOTAL // 10
FORGED = TOTAL // 20
UNIQUE = TOTAL - REDELIVERED - FORGED


def test_a_flood_enqueues_exactly_the_valid_unique_deliveries(
    redis_url: str, chaos_run: int
) -> None:
    run = f"flood-{uuid.uuid4().hex[:10]}"
    secret = secrets.token_hex(16)
    rng = random.Random(chaos_run)
    valid = deliveries(UNIQUE + FORGED, secret.encode(), run)
    genuine, to_forge = valid[:UNIQUE], valid[UNIQUE:]
    forged = [(body, {**h, "X-Hub-Signature-256": "sha256=" + "0" * 64}) for body, h in to_forge]
    again = [rng.choice(genuine) for _ in range(REDELIVERED)]
    batch = genuine + forged + again
    rng.shuffle(batch)
    client = redis_py.Redis.from_url(redis_url)
    queue = review_queue(run, client)
    try:
        with _serve_process(redis_url, run, secret) as url:
            _, statuses, seconds = _run(_drive(url, batch, 8))
        admission = Admission(client, queue, prefix=f"reviewq:{run}")
        registered = [admission.read_meta(f"bench/{run}#{i + 1}") for i in range(UNIQUE + FORGED)]
        enqueued = queue.count
    finally:
        queue.delete(delete_jobs=True)
        for key in client.scan_iter(match=f"reviewq:{run}*", count=1000):
            client.delete(key)
        client.close()
    print(f"flood: {TOTAL} deliveries in {seconds:.1f} s, statuses {dict(statuses)}")
    # A redelivery is answered 200 (already taken) or, while the first copy is still
    # being taken, 409 with Retry-After; either way it enqueues nothing.
    assert statuses["202"] == UNIQUE and statuses["401"] == FORGED
    assert statuses["200"] + statuses["409"] == REDELIVERED
    assert sum(statuses.values()) == TOTAL
    assert enqueued == UNIQUE
    assert all(meta is not None for meta in registered[:UNIQUE])
    assert all(meta is None for meta in registered[UNIQUE:])
