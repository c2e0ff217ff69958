"""Shared fixtures: a real Redis server for the whole session, never a fake.

The limiter is Lua run by Redis, so only a real server tests it. Tests share one
server and never flush it: each test names its keys with `unique`, so a REDIS_URL
pointing at a server the user cares about is safe, and tests may run in any order.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import pytest
import redis as redis_py

# Every fake GitHub exchange of every test is checked against GitHub's OpenAPI
# description (tests/github_exchanges.py): an autouse fixture and a closing count.
from github_exchanges import (  # noqa: F401
    github_exchanges_match_the_description,
    pytest_terminal_summary,
)
from gitlab_exchanges import gitlab_exchanges_match_the_docs, pytest_configure  # noqa: F401

from scheduler.sandbox.localredis import (
    LocalRedis,
    RedisServerNotFound,
    free_port,
    redis_url_or_local,
)

T = TypeVar("T")


class LocalRedisFactory(Protocol):
    """Starts one more private server; keyword arguments go to LocalRedis."""

    def __call__(self, **kwargs: Any) -> LocalRedis: ...


def or_fail_without_server(start: Callable[[], T]) -> T:
    """Fail, not skip: a green run that tested no Redis code would lie."""
    try:
        return start()
    except RedisServerNotFound as exc:
        message = str(exc)
    # Outside the except block, so pytest prints the message once, not chained.
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """REDIS_URL if set (a server the user runs), else one private server per session."""
    url, server = or_fail_without_server(lambda: redis_url_or_local(os.environ))
    try:
        yield url
    finally:
        if server is not None:
            server.stop()


@pytest.fixture(name="redis")
def redis_client(redis_url: str) -> Iterator[redis_py.Redis]:
    """A bytes-returning client, as the limiter code uses; closed after the test."""
    client = redis_py.Redis.from_url(redis_url, decode_responses=False)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def unique() -> str:
    """A short name no other test (or earlier run on the same server) has used."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def local_redis_factory() -> Iterator[LocalRedisFactory]:
    """Extra private servers on TCP ports, for tests that kill or restart Redis.

    Those tests must never touch the shared session server or the user's REDIS_URL.
    """
    servers: list[LocalRedis] = []

    def start(**kwargs: Any) -> LocalRedis:
        kwargs.setdefault("port", free_port())
        server = LocalRedis(**kwargs)
        servers.append(server)
        or_fail_without_server(server.start)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
