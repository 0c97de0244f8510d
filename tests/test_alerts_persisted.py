"""Alerts reach the database: their journal events (alert_raised / alert_cleared) are written
by the persister like every other event, exactly once, with the alert's level and message."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from engine.engine import ReserveEngine
from engine.monitoring.alerts import AlertBook
from persistence.migrate import upgrade
from persistence.schema import alerts, transactions
from persistence.store import close_shared_engines, shared_engine
from persistence.worker import Persister
from tests.engine_helpers import Clock


@pytest.mark.real
@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_alert_transitions_are_persisted(backend: dict[str, Any],
                                               fresh_database_url: str) -> None:
    settings = replace(backend["settings"], database_url=fresh_database_url)
    clock = Clock()
    client = backend["async_factory"]()
    engine = ReserveEngine(client, settings, clock_ms=clock)
    book = AlertBook(client, engine.ops.keys, clock)
    await engine.top_up_reserve("USDT", "1000", "crypto", "seed")
    await engine.reserve_amount("USDT", "910", "crypto", "h1", "swap")
    raised = await book.evaluate(await engine.all_reserve_balances(), {})
    clock.advance_s(60)
    await engine.release_reserve("h1")
    cleared = await book.evaluate(await engine.all_reserve_balances(), {})
    await client.aclose()

    upgrade(fresh_database_url)
    sync = redis.Redis.from_url(settings.redis_url or "", decode_responses=True)
    persister = Persister(sync, settings, fresh_database_url, "p1")
    try:
        persister.drain(timeout_s=30)
        persister.drain(timeout_s=30)  # again: nothing is written twice
        t = transactions
        with shared_engine(fresh_database_url).connect() as conn:
            rows = list(conn.execute(sa.select(t).where(
                t.c.operation.in_(("alert_raised", "alert_cleared"))).order_by(t.c.event_id)))
            alert_rows = list(conn.execute(sa.select(alerts)))
    finally:
        persister.close()
        sync.close()
        close_shared_engines()
    assert [(r.event_id, r.operation, r.reference) for r in rows] == [
        (raised[0]["event_id"], "alert_raised", "RESERVE_USDT_CRYPTO|utilization"),
        (cleared[0]["event_id"], "alert_cleared", "RESERVE_USDT_CRYPTO|utilization")]
    assert rows[0].metadata["level"] == "critical"
    assert rows[0].metadata["message"] == "USDT reserve utilization 91.00% (>= 90%: critical)"
    assert int(rows[1].metadata["alert_id"]) == raised[0]["event_id"]
    assert rows[1].created_at - rows[0].created_at == timedelta(seconds=60)
    # the alerts table: one row per raise, ended by its clear
    assert [(a.id, a.account, a.kind, a.level, a.message) for a in alert_rows] == [
        (raised[0]["event_id"], "RESERVE_USDT_CRYPTO", "utilization", "critical",
         "USDT reserve utilization 91.00% (>= 90%: critical)")]
    assert alert_rows[0].raised_at == rows[0].created_at
    assert alert_rows[0].cleared_at == rows[1].created_at
