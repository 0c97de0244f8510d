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


def _cleanup(client: Any, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i:i + 500])


@pytest.fixture(params=["fakeredis", "redis"])
def backend(request: pytest.FixtureRequest, key_prefix: str) -> Iterator[dict[str, Any]]:
    """The same test on the embedded fakeredis and on the real Redis.

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
    url = request.getfixturevalue("redis_url")
    settings = replace(settings, redis_url=url)
    sync = redis.Redis.from_url(url, decode_responses=True)

    def real_async_factory() -> Any:
        return redis.asyncio.Redis.from_url(url, decode_responses=True, max_connections=256)

    try:
        yield {"name": "redis", "sync": sync, "async_factory": real_async_factory,
               "settings": settings}
    finally:
        _cleanup(sync, key_prefix)
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
