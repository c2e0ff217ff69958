"""At `reviewq worker` start: every key is there, and what each Z.AI key really is.

A missing key variable is a configuration fact, so it is checked here, where it can be
fixed, and never recorded as an outage: `missing_keys` names the variables the worker
refuses to start without, and `close_missing_key_circuits` clears any circuit an
earlier version opened for a missing key (code `missing_key`), now that it is set.

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

from scheduler.config import ConfigError, Settings, api_key, connect_redis
from scheduler.quota.circuit import Circuit
from scheduler.quota.limiter import LIMITER_PREFIX
from scheduler.quota.readings import Detection
from workers.providers.client import MISSING_KEY
from workers.providers.failover import build_route

__all__ = ["check_keys", "close_missing_key_circuits", "missing_keys"]

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
    client = connect_redis(settings.redis_url)
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


def missing_keys(settings: Settings, env: Mapping[str, str] = os.environ) -> list[str]:
    """One line per account whose key variable is unset or blank, naming the variable
    (never a value)."""
    found = []
    for account in settings.accounts:
        try:
            api_key(account, env)
        except ConfigError as exc:
            found.append(str(exc))
    return found


def close_missing_key_circuits(
    settings: Settings, client: redis_lib.Redis, *, key_prefix: str = LIMITER_PREFIX
) -> list[str]:
    """Close the circuits opened for a missing key; call only once every key is set.
    Returns the accounts whose circuit was closed."""
    circuit = Circuit(client, key_prefix=key_prefix)
    closed = []
    for account in settings.accounts:
        state = circuit.state(account.name)
        if state is not None and state.code == MISSING_KEY and circuit.close(account.name):
            closed.append(account.name)
    return closed


def _now_ms(client: redis_lib.Redis) -> int:
    sec, usec = cast(tuple[int, int], client.time())
    return int(sec) * 1000 + int(usec) // 1000
