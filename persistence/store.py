"""The queries of the book of record, behind a small interface (tables: schema.py).

Every write is idempotent on the journal's event id, so a batch delivered twice (a persister
that crashed between the database commit and the XACK) changes nothing the second time.
Database errors leave this module as StoreError / StoreUnavailable (persistence.errors).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.types.json import Json
from sqlalchemy.dialects import postgresql, sqlite

from engine.journal import MONEY_OPERATIONS, JournalEvent
from persistence import limits
from persistence.errors import translate
from persistence.schema import alerts, audit_log, holds, reserve_accounts, transactions

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ALERT_OPERATIONS = ("alert_raised", "alert_cleared")
HOLD_OPERATIONS = ("reserve_lock", "reserve_release", "reserve_expire", "reserve_commit")
_HOLD_END_STATE = {"reserve_release": "released", "reserve_expire": "expired",
                   "reserve_commit": "committed"}


@functools.lru_cache(maxsize=4096)  # a batch's events share a handful of clock readings
def ms_to_dt(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)  # exact: no float on the way


def dt_to_ms(value: datetime) -> int:
    if value.tzinfo is None:  # SQLite hands back naive datetimes; they were stored in UTC
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // timedelta(milliseconds=1)


def create_db_engine(database_url: str) -> sa.Engine:
    if database_url.startswith("sqlite"):
        engine = sa.create_engine(database_url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the persister
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return sa.create_engine(database_url, pool_pre_ping=True, pool_size=4, max_overflow=4,
                            pool_timeout=10)


@functools.lru_cache(maxsize=8)
def shared_engine(database_url: str) -> sa.Engine:
    """One engine (and pool) per URL for the process's read paths (analytics, tools)."""
    engine = create_db_engine(database_url)
    _made.append(engine)
    return engine


def close_shared_engines() -> None:
    for engine in _open_engines():
        engine.dispose()
    _made.clear()
    shared_engine.cache_clear()


def _open_engines() -> list[sa.Engine]:
    # lru_cache keeps no public list of its values; remember them as they are made
    return list(_made)


_made: list[sa.Engine] = []


def _chunks(rows: Sequence[dict[str, Any]]) -> Iterator[Sequence[dict[str, Any]]]:
    for i in range(0, len(rows), limits.insert_rows_max):
        yield rows[i:i + limits.insert_rows_max]


def _newer_hold_wins(stmt: Any, columns: list[str], keep: tuple[str, ...] = ()) -> Any:
    """A hold's row takes the given columns (but those to keep) of a row from a later event
    only: a replayed batch changes nothing."""
    return stmt.on_conflict_do_update(
        index_elements=["reference"],
        set_={c: stmt.excluded[c] for c in columns if c != "reference" and c not in keep},
        where=holds.c.last_event_id < stmt.excluded.last_event_id,
    )


def _apply(conn: sa.Connection, table: sa.Table, rows: Sequence[dict[str, Any]],
           conflict: Callable[[Any, list[str]], Any]) -> list[Any]:
    """INSERT rows (all with the same keys) into table, with the ON CONFLICT (and RETURNING)
    clause that `conflict(stmt, columns)` adds; returns what RETURNING gave.

    Postgres: COPY into a temporary table and one INSERT ... SELECT from it, so the batch is
    parsed and planned once. SQLite (the embedded default): executemany of one statement,
    compiled once (SQLAlchemy's cache). Building `.values(rows)` instead compiled a new
    statement with thousands of parameters for every chunk: most of the persister's time."""
    if not rows:
        return []
    columns = list(rows[0])
    if conn.dialect.name != "postgresql":
        returned: list[Any] = []
        for chunk in _chunks(rows):
            result = conn.execute(conflict(sqlite.insert(table), columns), chunk)
            if result.returns_rows:
                returned += result.scalars().all()
        return returned
    stage = _copy_to_stage(conn, table, columns, rows)
    stmt = conflict(postgresql.insert(table).from_select(
        columns, sa.select(*(stage.c[c] for c in columns))), columns)
    result = conn.execute(stmt)
    return list(result.scalars()) if result.returns_rows else []


def _copy_to_stage(conn: sa.Connection, table: sa.Table, columns: list[str],
                   rows: Sequence[dict[str, Any]]) -> sa.TableClause:
    """COPY rows into `stage_<table>`, a temporary table of this connection shaped like table
    and emptied first (it lives as long as the pooled connection; its rows only in this
    transaction)."""
    name = f"stage_{table.name}"
    quoted = ", ".join(f'"{c}"' for c in columns)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} (LIKE {table.name})")
        cursor.execute(f"TRUNCATE {name}")
        json_at = [i for i, c in enumerate(columns) if isinstance(table.c[c].type, sa.JSON)]
        with cursor.copy(f"COPY {name} ({quoted}) FROM STDIN") as copy:
            for row in rows:
                values = [row[c] for c in columns]
                for i in json_at:
                    if values[i] is not None:
                        values[i] = Json(values[i])
                copy.write_row(values)
    except psycopg.Error as exc:
        # as SQLAlchemy's own error, so that it is classified (transient or not) in one place
        raise sa.exc.DBAPIError.instance(f"COPY {name}", None, exc, psycopg.Error) from exc
    finally:
        cursor.close()
    return sa.table(name, *(sa.column(c) for c in columns))


@dataclass(frozen=True, slots=True)
class LedgerSums:
    """One account as the ledger sees it: sums of its events, and the last event's balances."""

    account: str
    total_minor: int
    locked_minor: int
    last_total_minor: int
    last_locked_minor: int
    event_count: int
    last_event_id: int


def _transaction_row(e: JournalEvent) -> dict[str, Any]:
    return {
        "event_id": e.event_id, "account": e.account, "operation": e.op,
        "amount_minor": e.amount_minor, "reference": e.reference,
        "d_total_minor": e.d_total_minor, "d_locked_minor": e.d_locked_minor,
        "total_after_minor": e.total_minor, "locked_after_minor": e.locked_minor,
        "metadata": e.meta or None, "created_at": ms_to_dt(e.ts_ms),
    }


def _account_row(e: JournalEvent) -> dict[str, Any]:
    x = e.extra
    return {"id": int(x["aid"]), "label": e.account, "currency": x["cur"],
            "account_type": x["type"], "kind": x["kind"], "account_number": x["num"],
            "created_at": ms_to_dt(e.ts_ms)}


def _audit_row(e: JournalEvent) -> dict[str, Any]:
    meta = dict(e.meta)
    actor, ip = str(meta.pop("actor", "")), str(meta.pop("ip", ""))
    action = str(meta.pop("action", e.reference if e.op == "audit" else e.op))
    result = meta.pop("result", None)
    if result is None and e.op != "audit":  # a money change: its outcome is the event itself
        result = {"transaction_id": e.event_id, "operation": e.op, "amount_minor": e.amount_minor,
                  "total_after_minor": e.total_minor, "locked_after_minor": e.locked_minor}
    request = meta.pop("request", meta or None)
    return {"event_id": e.event_id, "actor": actor[:128], "action": action[:64], "ip": ip[:64],
            "account": e.account, "reference": "" if e.op == "audit" else e.reference,
            "request": request, "result": result, "created_at": ms_to_dt(e.ts_ms)}


def _alert_row(e: JournalEvent) -> dict[str, Any]:
    m = e.meta
    return {"id": e.event_id, "account": str(m.get("account", ""))[:128],
            "kind": str(m.get("kind", ""))[:32], "level": str(m.get("level", ""))[:16],
            "message": str(m.get("message", "")), "raised_at": ms_to_dt(e.ts_ms)}


def _fold_holds(events: Iterable[JournalEvent]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each hold's state after this batch's events (in journal order): full rows (its lock was
    in the batch) and end-only rows (it was locked in an earlier batch)."""
    full: dict[str, dict[str, Any]] = {}
    ends: dict[str, dict[str, Any]] = {}
    for e in events:
        if e.op == "reserve_lock":
            ends.pop(e.reference, None)
            expires_ms = int(e.extra.get("exp", "0"))
            full[e.reference] = {
                "reference": e.reference, "account": e.account, "amount_minor": e.amount_minor,
                "committed_minor": 0, "state": "pending", "operation_type": e.extra.get("optype", ""),
                "created_at": ms_to_dt(e.ts_ms),
                "expires_at": ms_to_dt(expires_ms) if expires_ms else None,
                "ended_at": None, "last_event_id": e.event_id,
            }
            continue
        committed = e.amount_minor if e.op == "reserve_commit" else 0
        held = int(e.extra["held"]) if e.op == "reserve_commit" else e.amount_minor
        end = {"state": _HOLD_END_STATE[e.op], "amount_minor": held, "committed_minor": committed,
               "ended_at": ms_to_dt(e.ts_ms), "last_event_id": e.event_id}
        target = full.get(e.reference)
        if target is not None:
            target.update(end)
        else:
            ends[e.reference] = {"reference": e.reference, "account": e.account,
                                 "operation_type": "", **end}
    return list(full.values()), list(ends.values())


class Store:
    def __init__(self, database_url: str, engine: sa.Engine | None = None) -> None:
        self.database_url = database_url
        self.engine = engine or create_db_engine(database_url)

    def close(self) -> None:
        self.engine.dispose()

    def write_batch(self, events: Sequence[JournalEvent]) -> int:
        """Write a batch in one transaction; returns how many events were new."""
        unique = {e.event_id: e for e in events}
        ordered = sorted(unique.values(), key=lambda e: e.event_id)
        for e in ordered:
            assert e.total_minor >= e.locked_minor or e.op == "audit", e
            assert e.locked_minor >= 0, e
        try:
            with self.engine.begin() as conn:
                return self._write(conn, ordered)
        except sa.exc.SQLAlchemyError as exc:
            raise translate(exc) from exc

    def _write(self, conn: sa.Connection, events: Sequence[JournalEvent]) -> int:
        _apply(conn, reserve_accounts, [_account_row(e) for e in events if e.op == "account_open"],
               lambda stmt, _: stmt.on_conflict_do_nothing())
        new_ids = _apply(conn, transactions, [_transaction_row(e) for e in events],
                         lambda stmt, _: stmt.on_conflict_do_nothing(index_elements=["event_id"])
                         .returning(transactions.c.event_id))
        full, ends = _fold_holds(e for e in events if e.op in HOLD_OPERATIONS)
        _apply(conn, holds, full, _newer_hold_wins)
        # An end whose lock came in an earlier batch keeps the lock's operation type (its
        # created_at and expiry are not in the row at all).
        _apply(conn, holds, ends, functools.partial(_newer_hold_wins, keep=("operation_type",)))
        audits = [_audit_row(e) for e in events
                  if e.op == "audit" or (e.op in MONEY_OPERATIONS and "actor" in e.meta)]
        _apply(conn, audit_log, audits,
               lambda stmt, _: stmt.on_conflict_do_nothing(index_elements=["event_id"]))
        self._write_alerts(conn, [e for e in events if e.op in ALERT_OPERATIONS])
        return len(new_ids)

    def _write_alerts(self, conn: sa.Connection, events: Sequence[JournalEvent]) -> None:
        """An alert row per raise (its id is the raise's event id), ended by its clear."""
        _apply(conn, alerts, [_alert_row(e) for e in events if e.op == "alert_raised"],
               lambda stmt, _: stmt.on_conflict_do_nothing(index_elements=["id"]))
        for e in events:
            if e.op == "alert_cleared" and e.meta.get("alert_id"):
                conn.execute(sa.update(alerts)
                             .where(alerts.c.id == int(e.meta["alert_id"]),
                                    alerts.c.cleared_at.is_(None))
                             .values(cleared_at=ms_to_dt(e.ts_ms)))

    # -- reads ----------------------------------------------------------------------------------

    def _read(self, stmt: Any, params: dict[str, Any] | None = None) -> list[sa.Row[Any]]:
        try:
            with self.engine.connect() as conn:
                return list(conn.execute(stmt, params or {}))
        except sa.exc.SQLAlchemyError as exc:
            raise translate(exc) from exc

    def ledger_sums(self) -> dict[str, LedgerSums]:
        t = transactions
        sums = (sa.select(t.c.account, sa.func.sum(t.c.d_total_minor).label("dt"),
                          sa.func.sum(t.c.d_locked_minor).label("dl"),
                          sa.func.count().label("n"), sa.func.max(t.c.event_id).label("last"))
                .where(t.c.account != "").group_by(t.c.account).subquery())
        stmt = sa.select(sums, t.c.total_after_minor, t.c.locked_after_minor).join(
            t, t.c.event_id == sums.c.last)
        return {
            r.account: LedgerSums(r.account, int(r.dt), int(r.dl), int(r.total_after_minor),
                                  int(r.locked_after_minor), int(r.n), int(r.last))
            for r in self._read(stmt)
        }

    def accounts(self) -> list[sa.Row[Any]]:
        return self._read(sa.select(reserve_accounts).order_by(reserve_accounts.c.id))

    def holds(self, states: Sequence[str] | None = None) -> list[sa.Row[Any]]:
        stmt = sa.select(holds).order_by(holds.c.reference)
        if states:
            stmt = stmt.where(holds.c.state.in_(states))
        return self._read(stmt)

    def transfers_since(self, since: datetime) -> list[sa.Row[Any]]:
        """Top-ups and withdrawals since a time (their records make repeats idempotent)."""
        t = transactions
        return self._read(sa.select(t).where(
            t.c.operation.in_(("reserve_topup", "reserve_withdrawal")), t.c.created_at >= since
        ).order_by(t.c.event_id))

    def max_event_ids(self, shard_count: int) -> dict[int, int]:
        """The highest event id of each shard (ids of shard s are s+1 modulo shard_count)."""
        t = transactions
        shard = ((t.c.event_id - 1) % shard_count).label("shard")
        stmt = sa.select(shard, sa.func.max(t.c.event_id)).group_by(shard)
        return {int(s): int(m) for s, m in self._read(stmt)}

    def event_ids(self) -> list[int]:
        return [int(r[0]) for r in self._read(
            sa.select(transactions.c.event_id).order_by(transactions.c.event_id))]

    def transaction_rows(self) -> list[sa.Row[Any]]:
        return self._read(sa.select(transactions).order_by(transactions.c.event_id))

    def alert_rows(self) -> list[sa.Row[Any]]:
        return self._read(sa.select(alerts).order_by(alerts.c.id))

    def audit_rows(self) -> list[sa.Row[Any]]:
        return self._read(sa.select(audit_log).order_by(audit_log.c.event_id))

    def operation_totals(self, since: datetime) -> list[sa.Row[Any]]:
        """(currency, operation, count, amount_minor) of reserve accounts' money events."""
        t, a = transactions, reserve_accounts
        stmt = (sa.select(a.c.currency, t.c.operation, sa.func.count().label("n"),
                          sa.func.sum(t.c.amount_minor).label("amount_minor"))
                .join(a, a.c.label == t.c.account)
                .where(a.c.kind == "reserve", t.c.operation.in_(MONEY_OPERATIONS),
                       t.c.created_at >= since)
                .group_by(a.c.currency, t.c.operation)
                .order_by(a.c.currency, t.c.operation))
        return self._read(stmt)
