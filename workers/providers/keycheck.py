"""At `reviewq worker` start: what each Z.AI key really is, said before any review runs.

A V3 (credit) key configured under a V2 (prompt) preset, or the other way round, makes
every budget reviewq keeps for it wrong. The quota endpoint tells the two apart
(`CREDIT_LIMIT` or `TOKENS_LIMIT` entries), costs no quota, and its numbers are worth
adopting anyway, so every Z.AI account is polled once at start; a mismatch is logged
by the poller, kept for `inspect` and `/metrics`, and returned for the command to say.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import cast

import httpx
import redis as redis_lib

from scheduler.config import Settings
from scheduler.quota.limiter import LIMITER_PREFIX
from scheduler.quota.readings import Detection
from workers.providers.failover import build_route

__all__ = ["check_keys"]

log = logging.getLogger(__name__)


def check_keys(
    settings: Settings,
    *,
    env: Mapping[str, str] = os.environ,
    key_prefix: str = LIMITER_PREFIX,
    transport: httpx.BaseTransport | None = None,
) -> list[tuple[str, Detection]]:
    """Poll each Z.AI account's quota endpoint once; the accounts whose key is of
    another kind than their plan, with what was found. Never raises: a failed poll is
    logged by the poller, and the workers start anyway."""
    client = redis_lib.Redis.from_url(settings.redis_url)
    try:
        route = build_route(settings, client, env=env, key_prefix=key_prefix, transport=transport)
        now = _now_ms(client)
        found = []
        for entry in route.entries:
            if entry.account.provider != "zai" or not entry.account.plan.windows:
                continue
            entry.poller.maybe_poll(now)
            detection = entry.poller.readings.read().detection
            if detection is not None and detection.mismatch:
                found.append((entry.name, detection))
            entry.client.close()
        return found
    except redis_lib.RedisError as exc:
        log.warning("key check skipped: %s", exc)
        return []
    finally:
        client.close()


def _now_ms(client: redis_lib.Redis) -> int:
    sec, usec = cast(tuple[int, int], client.time())
    return int(sec) * 1000 + int(usec) // 1000
