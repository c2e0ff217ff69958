"""Redis clients from `redis_url`, a Sentinel-watched primary included.

`redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db][?query]` asks
the Sentinels which server is the primary of `service`, and asks again after any
connection error, so every reviewq process follows a failover by itself: no TCP proxy
that checks `role:master` is needed in front of Redis. The userinfo authenticates to
the Redis servers, as in `redis://`; `sentinel_username` and `sentinel_password` in the
query authenticate to the Sentinels when they need it. Any other query parameter is an
error: a misspelt one must not be silently ignored.

Every other scheme (`redis://`, `rediss://`, `unix://`) goes to redis-py's `from_url`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import redis as redis_lib
from redis.sentinel import Sentinel

__all__ = ["SENTINEL_SCHEME", "SentinelUrl", "connect_redis", "parse_sentinel_url"]

SENTINEL_SCHEME = "redis+sentinel"
_DEFAULT_SENTINEL_PORT = 26379
# How long asking one Sentinel may take before the next is asked: a dead Sentinel must
# not stall a failover that the others already agree on.
_SENTINEL_TIMEOUT_S = 2.0
_QUERY = frozenset({"sentinel_username", "sentinel_password"})


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """A parsed `redis+sentinel://` URL; repr leaves the passwords out."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    def __repr__(self) -> str:
        return f"SentinelUrl(sentinels={self.sentinels!r}, service={self.service!r}, db={self.db})"


def parse_sentinel_url(url: str) -> SentinelUrl:
    """The parts of a `redis+sentinel://` URL; ValueError names what is wrong (never
    quoting the URL, which may hold a password)."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError(f"{SENTINEL_SCHEME}:// URL needs /SERVICE or /SERVICE/DB after the hosts")
    if len(path) == 2 and not path[1].isdigit():
        raise ValueError(f"{SENTINEL_SCHEME}:// URL: the database must be a number")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - _QUERY)
    if unknown:
        allowed = ", ".join(sorted(_QUERY))
        raise ValueError(f"{SENTINEL_SCHEME}:// URL: unknown parameter {unknown[0]!r} ({allowed})")
    return SentinelUrl(
        sentinels=_hosts(hosts),
        service=unquote(path[0]),
        db=int(path[1]) if len(path) == 2 else 0,
        username=unquote(user) or None,
        password=unquote(password) or None,
        sentinel_username=_last(query, "sentinel_username"),
        sentinel_password=_last(query, "sentinel_password"),
    )


def _last(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] or None if values else None


def _hosts(text: str) -> tuple[tuple[str, int], ...]:
    found = []
    for item in text.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon:
            host, port = item.strip(), str(_DEFAULT_SENTINEL_PORT)
        host = host.strip("[]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{SENTINEL_SCHEME}:// URL: {item.strip()!r} is not host:port")
        found.append((host, int(port)))
    return tuple(found)


def connect_redis(url: str, **options: Any) -> redis_lib.Redis:
    """A client for `url`, with redis-py's `from_url` options. Through Sentinel, the
    client is the service's current primary; `single_connection_client` is dropped
    there, since a Sentinel-managed pool must be free to reconnect elsewhere."""
    if not url.startswith(f"{SENTINEL_SCHEME}://"):
        return redis_lib.Redis.from_url(url, **options)
    found = parse_sentinel_url(url)
    options.pop("single_connection_client", None)
    asking: dict[str, Any] = {
        "socket_timeout": _SENTINEL_TIMEOUT_S,
        "socket_connect_timeout": _SENTINEL_TIMEOUT_S,
    }
    if found.sentinel_username:
        asking["username"] = found.sentinel_username
    if found.sentinel_password:
        asking["password"] = found.sentinel_password
    sentinel = Sentinel(list(found.sentinels), sentinel_kwargs=asking)  # type: ignore[no-untyped-call]
    primary = sentinel.master_for(  # type: ignore[no-untyped-call]
        found.service,
        db=found.db,
        username=found.username,
        password=found.password,
        **options,
    )
    return cast(redis_lib.Redis, primary)
