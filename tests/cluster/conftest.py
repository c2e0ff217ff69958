"""Fixtures for tests/cluster: a session-wide 3-primary Redis Cluster.

Every test here carries the `cluster` marker (see pyproject.toml): `pytest -m cluster`
runs only these, `pytest -m "not cluster"` everything else.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scheduler.sandbox.localredis import RedisServerNotFound, find_server_binary

from .cluster_support import ClusterHandle, NoClusterSupport, start_cluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/cluster, so CI and people can select them."""
    for item in items:
        if "/tests/cluster/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterHandle]:
    """A 3-primary cluster for the whole session; every node stopped by pid after."""
    try:
        binary = find_server_binary()
    except RedisServerNotFound as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        with start_cluster(binary) as handle:
            yield handle
    except NoClusterSupport as exc:
        pytest.skip(str(exc))
