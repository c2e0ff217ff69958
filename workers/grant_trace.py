"""The grant trace: one line per limiter grant and per lease release, as it happened.

`reviewq simulate` reads it (`scheduler.sim.report`) to judge a run from what the
production job really did, not from a model of it: how concurrency was used, whether a
replayed acquire was charged once, how long each account's line was at each release.
It is written only when `RuntimeSpec.trace` is on (simulate turns it on, and so do the
pipeline tests and chaos runs): in a deployment it would be an unbounded Redis list
and two more round trips per grant, for lines nobody reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import cast

from scheduler.admission import Claimed
from workers.providers.client import request_cost
from workers.providers.failover import Choice
from workers.runtime import Runtime

__all__ = ["write_grant_trace"]


def write_grant_trace(
    rt: Runtime,
    claimed: Claimed,
    grants: list[Choice],
    released: Mapping[str, int],
    fallback_ms: int,
) -> None:
    """The lines of one run's grants, once their leases are released; a release notes
    how many messages stood in the account's line at that moment, and its time is the
    limiter's own (`released`, by lease id; `fallback_ms` for a call that raised before
    its release was timed)."""
    if not rt.spec.trace or not grants:
        return
    keys = rt.admission.keys
    for choice in grants:
        cost = dict(choice.cost) or request_cost(choice.entry.account, rt.spec.model)
        line = {
            "t_ms": choice.grant.now_ms,
            "pr": claimed.pr,
            "account": choice.entry.name,
            "request_id": choice.grant.request_id,
            "replayed": choice.grant.replayed,
            "cost": cost,
            "remaining": choice.grant.remaining,
        }
        waiting = cast(int, rt.redis.zcard(keys.line(choice.entry.name)))
        release = {
            "event": "release",
            "t_ms": released.get(choice.grant.lease_id, fallback_ms),
            "account": choice.entry.name,
            "waiting": waiting,
        }
        for item in (line, release):
            rt.redis.rpush(keys.trace, json.dumps(item, separators=(",", ":")))
