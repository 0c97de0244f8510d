"""Fixtures of the persistence tests, loaded for every test module by tests/conftest.py
(`pytest_plugins`), so that no module imports a fixture by name: `stack` (real Redis + a fresh
Postgres database, or fakeredis + SQLite) and `pg_stack` (the real pair only). Both yield a
tests.persist_support.Stack."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis

from engine.config import Settings
from tests.persist_support import Stack
from tests.services import delete_prefix


def _real_redis(request: pytest.FixtureRequest, prefix: str) -> Iterator[Any]:
    url = request.getfixturevalue("redis_url")
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        yield client
    finally:
        delete_prefix(client, prefix)
        client.close()


@pytest.fixture(params=["postgres", "sqlite"])
def stack(request: pytest.FixtureRequest, key_prefix: str, tmp_path: Any) -> Iterator[Stack]:
    """Real Redis + a fresh Postgres database, or the embedded fakeredis + SQLite."""
    settings = dataclasses.replace(Settings(), key_prefix=key_prefix, shard_count=4)
    if request.param == "sqlite":
        client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
        db_url = f"sqlite:///{tmp_path}/reserves.db"
        s = Stack("sqlite", client, dataclasses.replace(settings, database_url=db_url), db_url)
        yield s
        s.close()
        return
    db_url = request.getfixturevalue("fresh_database_url")
    settings = dataclasses.replace(settings, redis_url=request.getfixturevalue("redis_url"),
                                   database_url=db_url)
    for client in _real_redis(request, key_prefix):
        s = Stack("postgres", client, settings, db_url)
        yield s
        s.close()


@pytest.fixture
def pg_stack(request: pytest.FixtureRequest, key_prefix: str) -> Iterator[Stack]:
    """Real Redis + a fresh Postgres database only."""
    db_url = request.getfixturevalue("fresh_database_url")
    redis_url = request.getfixturevalue("redis_url")
    settings = Settings(redis_url=redis_url, database_url=db_url, key_prefix=key_prefix,
                        shard_count=4)
    for client in _real_redis(request, key_prefix):
        s = Stack("postgres", client, settings, db_url)
        yield s
        s.close()
