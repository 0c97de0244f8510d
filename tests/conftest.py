"""Shared fixtures: the real Redis and Postgres (see tests/services.py) and the embedded
fakeredis, each test under its own key prefix so tests never see each other's keys."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio

from engine.config import Settings
from tests import services

# fixtures kept in their own modules (a test module never imports a fixture by name)
pytest_plugins = ["tests.persist_fixtures"]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("RESERVES_REDIS_URL")
    if url:
        yield url
        return
    with services.redis_server() as started:
        yield started


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = os.environ.get("RESERVES_DATABASE_URL")
    if url:
        yield url
        return
    with services.postgres_server() as started:
        yield started


@pytest.fixture
def key_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`backend` runs each test on fakeredis and real Redis, and also on a real local Redis
    Cluster in modules that set RUN_ON_CLUSTER = True (the engine's suite)."""
    if "backend" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        argnames = mark.args[0]
        if isinstance(argnames, str):
            argnames = argnames.split(",")
        if "backend" in (name.strip() for name in argnames):
            return  # the test names its backends itself
    names: list[Any] = ["fakeredis", pytest.param("redis", marks=pytest.mark.real)]
    if getattr(metafunc.module, "RUN_ON_CLUSTER", False):
        names.append(pytest.param("cluster", marks=pytest.mark.real))  # not in test-fast
    metafunc.parametrize("backend", names, indirect=True)


REAL_SERVICE_FIXTURES = frozenset({"redis_url", "database_url", "fresh_database_url",
                                   "shared_cluster"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that asks for a real service is `real`, marked or not: `make test-fast`
    (-m "not real") then runs exactly the tests that need nothing but this process."""
    for item in items:
        if REAL_SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real)


@pytest.fixture(scope="session")
def shared_cluster() -> Iterator[Any]:
    """One 3-master local cluster for every test that runs on the cluster backend."""
    from tests.cluster import redis_cluster

    with redis_cluster(masters=3) as started:
        yield started


@pytest.fixture
def backend(request: pytest.FixtureRequest, key_prefix: str) -> Iterator[dict[str, Any]]:
    """The same test on the embedded fakeredis, the real Redis (and a Redis Cluster).

    Yields {"name", "sync": a sync client, "async_factory": () -> asyncio client,
    "settings": Settings with this test's key prefix}.
    """
    settings = replace(Settings(), key_prefix=key_prefix)
    if request.param == "fakeredis":
        server = fakeredis.FakeServer()
        sync = fakeredis.FakeRedis(server=server, decode_responses=True)

        def async_factory() -> Any:
            return fakeredis.FakeAsyncRedis(server=server, decode_responses=True)

        yield {"name": "fakeredis", "sync": sync, "async_factory": async_factory,
               "settings": settings}
        return
    if request.param == "cluster":
        from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
        from redis.cluster import RedisCluster

        url = request.getfixturevalue("shared_cluster").url
        settings = replace(settings, redis_url=url, redis_cluster=True, shard_count=16)
        sync = RedisCluster.from_url(url, decode_responses=True)

        def cluster_async_factory() -> Any:
            return AsyncRedisCluster.from_url(url, decode_responses=True)

        try:
            yield {"name": "cluster", "sync": sync, "async_factory": cluster_async_factory,
                   "settings": settings}
        finally:
            for node in sync.get_primaries():
                services.delete_prefix(sync.get_redis_connection(node), key_prefix, deleter=sync)
            sync.disconnect_connection_pools()  # close() alone leaves sockets open (redis-py 8.1)
            sync.close()
        return
    url = request.getfixturevalue("redis_url")
    settings = replace(settings, redis_url=url)
    sync = redis.Redis.from_url(url, decode_responses=True)

    def real_async_factory() -> Any:
        return redis.asyncio.Redis.from_url(url, decode_responses=True, max_connections=256)

    try:
        yield {"name": "redis", "sync": sync, "async_factory": real_async_factory,
               "settings": settings}
    finally:
        services.delete_prefix(sync, key_prefix)
        sync.close()


@pytest.fixture
async def async_redis(backend: dict[str, Any]) -> AsyncIterator[Any]:
    client = backend["async_factory"]()
    yield client
    await client.aclose()


@pytest.fixture
def fresh_database_url(database_url: str) -> Iterator[str]:
    """A new, empty Postgres database on the shared server for one test, dropped afterwards."""
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.make_url(database_url).set(database=name)
        yield url.render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
