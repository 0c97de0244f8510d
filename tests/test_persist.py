"""The persister end to end: every journal event becomes exactly one row, on real Redis +
Postgres and on the embedded fakeredis + SQLite."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from engine.errors import InvalidRequest
from engine.journal import MONEY_OPERATIONS, JournalEvent
from engine.registry import CurrencyRegistry
from engine.service import ReserveService
from persistence import migrate
from persistence.analytics import reserve_analytics
from persistence.reconcile import reconcile
from persistence.schema import metadata
from persistence.store import create_db_engine
from tests.persist_support import (
    Stack,
    assert_rows_equal_events,
    journal,
    redis_pending_holds,
    run_workload,
)


def _tables(url: str) -> set[str]:
    engine = create_db_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrations_match_the_schema_and_downgrade(stack: Stack) -> None:
    url = stack.database_url
    assert migrate.current_revision(url) is None
    migrate.ensure_schema(url)
    assert migrate.current_revision(url) == migrate.head_revision()
    engine = create_db_engine(url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(
                conn, opts={"compare_type": True}), metadata)
    finally:
        engine.dispose()
    assert diff == []
    assert {"reserve_accounts", "transactions", "holds", "audit_log", "alerts"} <= _tables(url)
    migrate.ensure_schema(url)  # current: nothing to do
    migrate.downgrade(url, "base")
    assert _tables(url) <= {"alembic_version"}
    assert migrate.current_revision(url) is None
    migrate.ensure_schema(url)
    assert migrate.current_revision(url) == migrate.head_revision()


def _check_flushed(stack: Stack, steps: int) -> None:
    workload = run_workload(stack.client, stack.settings, steps)
    assert workload.applied_count == steps
    assert workload.refused_count > 0  # refusals journal nothing
    events = journal(stack.client, stack.settings)
    ops = {e.op for e in events}
    assert {"account_open", "audit", *MONEY_OPERATIONS} <= ops, ops
    persister = stack.persister("p1", batch_count_max=400)
    assert persister.drain(timeout_s=120) == len(events)
    assert_rows_equal_events(stack, events)
    assert reconcile(stack.client, stack.settings, stack.database_url) == []
    # pending holds in the database are the ones in Redis
    held = {row.reference: row for row in stack.store().holds(["pending"])}
    assert set(held) == set(redis_pending_holds(stack.client, stack.settings))
    # audit rows: audit events and the money events an admin made
    audits = [e for e in events if e.op == "audit" or "actor" in e.meta]
    rows = stack.store().audit_rows()
    assert [r.event_id for r in rows] == [e.event_id for e in audits]
    assert {r.actor for r in rows} == {"admin-1", "admin-2"}
    cache_clear = next(r for r in rows if r.action == "cache_clear")
    assert (cache_clear.ip, cache_clear.request) == ("10.0.0.2", {"all": True})
    by_id = {e.event_id: e for e in audits}
    for row in rows:  # a money change's audit row holds its outcome
        e = by_id[row.event_id]
        if e.op != "audit":
            assert row.result == {"transaction_id": e.event_id, "operation": e.op,
                                  "amount_minor": e.amount_minor,
                                  "total_after_minor": e.total_minor,
                                  "locked_after_minor": e.locked_minor}
    lag = persister.lag()["total"]
    assert (lag["pending"], lag["unread"], lag["oldest_unpersisted_age_s"]) == (0, 0, 0.0)
    # trimmed below what was acknowledged; nothing new comes in a second drain
    assert lag["stream_length"] <= stack.settings.shard_count  # the last acknowledged of each
    assert persister.drain(timeout_s=10) == 0


@pytest.mark.real
def test_ten_thousand_operations_become_rows_one_for_one(pg_stack: Stack) -> None:
    _check_flushed(pg_stack, 10_000)


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
def test_mixed_operations_become_rows_one_for_one_embedded(stack: Stack) -> None:
    _check_flushed(stack, 1_500)


def test_analytics_has_the_seed_shape_exactly(stack: Stack) -> None:
    service = ReserveService(stack.client, stack.settings)
    service.top_up_reserve("USDT", Decimal("1000.5"), "crypto", "src-1")
    service.top_up_reserve("UGX", Decimal("50000"), "fiat", "src-2")
    service.reserve_amount("USDT", Decimal("100.25"), "crypto", "r-1", "swap")
    service.reserve_amount("USDT", Decimal("10"), "crypto", "r-2", "swap")
    service.release_reserve("r-1")
    service.commit_reserve("r-2", Decimal("4"))
    service.withdraw_from_reserve("UGX", Decimal("7"), "fiat", "dst-1")
    user = service.ops.user_spec("42", "USDT")  # user accounts are not reserves: left out
    service.run(service.ops.top_up(user, 5, "user-src"))
    stack.persister().drain(timeout_s=30)
    registry = CurrencyRegistry.load()
    result = reserve_analytics(stack.database_url, 30, registry)
    assert result == {
        "period_days": 30,
        "total_transactions": 7,
        "by_operation": {"reserve_commit": 1, "reserve_lock": 2, "reserve_release": 1,
                         "reserve_topup": 2, "reserve_withdrawal": 1},
        "by_currency": {
            "UGX": {"total_volume": Decimal("50007"), "transaction_count": 2,
                    "operations": {"reserve_topup": 1, "reserve_withdrawal": 1}},
            "USDT": {"total_volume": Decimal("1004.500000"), "transaction_count": 5,
                     "operations": {"reserve_commit": 1, "reserve_lock": 2,
                                    "reserve_release": 1, "reserve_topup": 1}},
        },
    }
    later = datetime.now(UTC) + timedelta(days=31)
    assert reserve_analytics(stack.database_url, 30, registry, now=later)["total_transactions"] == 0
    for bad in (0, -1, 3651, "7", 1.5, True):
        with pytest.raises(InvalidRequest, match="period_days"):
            reserve_analytics(stack.database_url, bad, registry)  # type: ignore[arg-type]


def test_lag_counts_unpersisted_events_and_trim_keeps_them(stack: Stack) -> None:
    service = ReserveService(stack.client, stack.settings)
    for i in range(5):
        service.top_up_reserve("BTC", Decimal("1"), "crypto", f"lag-{i}")
    persister = stack.persister("p1", batch_count_max=2)
    lag = persister.lag()["total"]
    assert (lag["unread"], lag["pending"], lag["stream_length"]) == (6, 0, 6)  # open + 5 top-ups
    assert lag["oldest_unpersisted_age_s"] >= 0
    persister.bootstrap()
    stream = persister.keys.stream(persister.keys.account("RESERVE_BTC_CRYPTO").shard)
    stack.client.xreadgroup("persister", "other", {stream: ">"}, count=3)  # read, never acked
    assert persister.trim() == 0
    lag = persister.lag()["streams"][stream]
    assert (lag["pending"], lag["unread"], lag["stream_length"]) == (3, 3, 6)
    persister.claim_idle_ms = 0
    assert persister.drain(timeout_s=30) == 6
    assert stack.client.xlen(stream) == 1  # only the last acknowledged entry stays
    assert persister.lag()["total"]["pending"] == 0


def test_cli_migrate_and_lag(stack: Stack, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    monkeypatch.setenv("RESERVES_DATABASE_URL", stack.database_url)
    assert main(["migrate"]) == 0
    assert f"database at revision {migrate.head_revision()}" in capsys.readouterr().out
    assert main(["migrate", "--downgrade", "--revision", "base"]) == 0
    assert "database at revision None" in capsys.readouterr().out
    if stack.name == "postgres":
        monkeypatch.setenv("RESERVES_REDIS_URL", stack.settings.redis_url or "")
        monkeypatch.setenv("RESERVES_KEY_PREFIX", stack.settings.key_prefix)
        monkeypatch.setenv("RESERVES_SHARDS", "4")
        ReserveService(stack.client, stack.settings).top_up_reserve("ETH", 1, None, "cli-1")
        assert main(["lag"]) == 0
        assert json.loads(capsys.readouterr().out)["total"]["unread"] == 2


def _event(event_id: int, op: str, ref: str, amount: int, total: int, locked: int,
           **extra: str) -> JournalEvent:
    d_total = -amount if op == "reserve_commit" else 0
    d_locked = {"reserve_lock": amount, "reserve_release": -amount}.get(op, d_total)
    return JournalEvent(f"{event_id}-0", event_id, op, "RESERVE_USDT_CRYPTO", ref, amount,
                        d_total, d_locked, total, locked, 1_700_000_000_000 + event_id,
                        {}, extra)


def test_store_writes_are_idempotent_and_a_later_end_keeps_the_lock(stack: Stack) -> None:
    """The bulk write path (COPY + INSERT ... SELECT on Postgres, executemany on SQLite): new
    events are counted exactly, a replayed batch changes no row, and an end written in a later
    batch keeps the lock's creation time and expiry while a stale replay cannot undo it."""
    migrate.upgrade(stack.database_url)
    store = stack.store()
    lock = _event(1, "reserve_lock", "h1", 70, 1000, 70, exp="1700000999000", optype="swap")
    other = _event(2, "reserve_lock", "h2", 30, 1000, 100, exp="0", optype="buy")
    commit = _event(3, "reserve_commit", "h1", 50, 950, 30, held="70")
    assert store.write_batch([lock, other]) == 2
    assert store.write_batch([lock, other]) == 0  # redelivered: nothing new
    assert store.write_batch([other, commit]) == 1  # half old, half new
    assert store.write_batch([lock]) == 0  # a stale replay of the lock
    rows = {r.reference: r for r in store.holds()}
    h1 = rows["h1"]
    assert (h1.state, h1.amount_minor, h1.committed_minor, h1.last_event_id) == (
        "committed", 70, 50, 3)
    assert (h1.created_at is not None, h1.expires_at is not None, h1.ended_at is not None) == (
        True, True, True)
    assert h1.operation_type == "swap"
    assert (rows["h2"].state, rows["h2"].expires_at, rows["h2"].ended_at) == ("pending", None, None)
    assert [r.event_id for r in store.transaction_rows()] == [1, 2, 3]
