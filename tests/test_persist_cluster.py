"""The persister on a real local Redis Cluster: 16 journal streams in different slots."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from engine.config import Settings
from engine.connection import sync_client
from persistence.reconcile import reconcile
from persistence.store import Store
from persistence.worker import Persister
from tests.cluster import redis_cluster
from tests.persist_support import journal, run_workload


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    with redis_cluster(masters=3) as started:
        yield started.url


@pytest.mark.real
def test_persister_on_a_cluster(cluster_url: str, key_prefix: str, tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path}/reserves.db"
    settings = replace(Settings(), redis_url=cluster_url, redis_cluster=True, shard_count=16,
                       key_prefix=key_prefix, database_url=db_url)
    client = sync_client(settings)
    persister = Persister(client, settings, db_url, "c1", read_block_ms=50)
    try:
        run_workload(client, settings, 400)
        events = journal(client, settings)
        assert len({(e.event_id - 1) % 16 for e in events}) > 1  # several streams
        assert persister.drain(timeout_s=60) == len(events)
        store = Store(db_url)
        assert store.event_ids() == [e.event_id for e in events]
        store.close()
        assert reconcile(client, settings, db_url) == []
        assert persister.lag()["total"]["pending"] == 0
    finally:
        persister.close()
        client.close()
