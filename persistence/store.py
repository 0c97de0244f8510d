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
from sqlalchemy.dialects import postgresql, sqlite

from engine.journal import MONEY_OPERATIONS, JournalEvent
from persistence import limits
from persistence.errors import translate
from persistence.schema import alerts, audit_log, holds, reports, reserve_accounts, transactions

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


def _chunks(rows: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(rows), limits.insert_rows_max):
        yield rows[i:i + limits.insert_rows_max]


def _newer_hold_wins(stmt: Any, columns: Sequence[str], keep: tuple[str, ...] = ()) -> Any:
    """A hold's row takes the given columns (but those to keep) of a row from a later event
    only: a replayed batch changes nothing."""
    return stmt.on_conflict_do_update(
        index_elements=["reference"],
        set_={c: stmt.excluded[c] for c in columns if c != "reference" and c not in keep},
        where=holds.c.last_event_id < stmt.excluded.last_event_id,
    )


@functools.lru_cache(maxsize=32)
def _pg_types(table: sa.Table, columns: tuple[str, ...]) -> list[str]:
    """Postgres type names of the columns, for a binary COPY (psycopg's set_types)."""
    dialect = postgresql.dialect()
    return [table.c[c].type.compile(dialect=dialect).split("(")[0].lower() for c in columns]


def _apply(conn: sa.Connection, table: sa.Table, columns: tuple[str, ...],
           rows: Sequence[tuple[Any, ...]], conflict: Callable[[Any, Sequence[str]], Any],
           direct: bool = False) -> int:
    """INSERT rows (tuples in the order of columns) into table, with the ON CONFLICT (and
    RETURNING) clause that `conflict(stmt, columns)` adds; returns how many rows RETURNING
    gave (every row, when they went straight in).

    Postgres: a binary COPY into a temporary table and one INSERT ... SELECT from it, so the
    batch is parsed and planned once. With direct, the batch is first COPYed straight into the
    table under a savepoint and the row count returned: rows that are new (the usual case)
    then cost one write instead of two; a conflict (a replayed batch) rolls the savepoint back
    and the batch takes the INSERT ... SELECT path. SQLite (the embedded default): executemany
    of one statement, compiled once (SQLAlchemy's cache)."""
    if not rows:
        return 0
    if conn.dialect.name != "postgresql":
        returned = 0
        for chunk in _chunks(rows):
            params = [dict(zip(columns, row)) for row in chunk]
            result = conn.execute(conflict(sqlite.insert(table), columns), params)
            if result.returns_rows:
                returned += len(result.scalars().all())
        return returned
    if direct:
        try:
            with conn.begin_nested():
                _copy(conn, table.name, table, columns, rows)
            return len(rows)
        except psycopg.errors.UniqueViolation:
            pass  # some rows are there already: the path that sorts them out
    name = f"stage_{table.name}"
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        # lives as long as the pooled connection; its rows only in this transaction
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {name} (LIKE {table.name})")
        cursor.execute(f"TRUNCATE {name}")
    finally:
        cursor.close()
    _copy(conn, name, table, columns, rows)
    stage = sa.table(name, *(sa.column(c) for c in columns))
    stmt = conflict(postgresql.insert(table).from_select(
        columns, sa.select(*(stage.c[c] for c in columns))), columns)
    result = conn.execute(stmt)
    return len(result.scalars().all()) if result.returns_rows else 0


def _copy(conn: sa.Connection, target: str, table: sa.Table, columns: tuple[str, ...],
          rows: Sequence[tuple[Any, ...]]) -> None:
    """Binary COPY of rows into target (shaped like table): psycopg's C dumpers, and no text
    for Postgres to parse (timestamps above all)."""
    quoted = ", ".join(f'"{c}"' for c in columns)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(f"COPY {target} ({quoted}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_pg_types(table, columns))
            write_row = copy.write_row
            for row in rows:
                write_row(row)
    except psycopg.errors.UniqueViolation:
        raise  # _apply's fallback
    except psycopg.Error as exc:
        # as SQLAlchemy's own error, so that it is classified (transient or not) in one place
        raise sa.exc.DBAPIError.instance(f"COPY {target}", None, exc, psycopg.Error) from exc
    finally:
        cursor.close()


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


# The action of a refused change's audit row ends so (api.endpoint.audit_refusal).
REFUSED_SUFFIX = "_refused"


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters of the audit log (None: any) and the page: newest first, below before_event_id."""

    limit: int
    actor: str | None = None
    action: str | None = None  # with or without its refusals
    outcome: str | None = None  # "applied" | "refused"
    reference: str | None = None
    since_ms: int | None = None  # created at or after
    until_ms: int | None = None  # created before
    before_event_id: int | None = None


TRANSACTION_COLUMNS = ("event_id", "account", "operation", "amount_minor", "reference",
                       "d_total_minor", "d_locked_minor", "total_after_minor",
                       "locked_after_minor", "metadata", "created_at")
ACCOUNT_COLUMNS = ("id", "label", "currency", "account_type", "kind", "account_number",
                   "created_at")
AUDIT_COLUMNS = ("event_id", "actor", "action", "ip", "account", "reference", "request", "result",
                 "created_at")
ALERT_COLUMNS = ("id", "account", "kind", "level", "message", "raised_at")
HOLD_COLUMNS = ("reference", "account", "amount_minor", "committed_minor", "state",
                "operation_type", "created_at", "expires_at", "ended_at", "last_event_id")
# An end whose lock came in an earlier batch: its created_at and expiry are not in the row.
HOLD_END_COLUMNS = ("reference", "account", "operation_type", "state", "amount_minor",
                    "committed_minor", "ended_at", "last_event_id")


def _transaction_row(e: JournalEvent) -> tuple[Any, ...]:
    return (e.event_id, e.account, e.op, e.amount_minor, e.reference, e.d_total_minor,
            e.d_locked_minor, e.total_minor, e.locked_minor, e.meta or None, ms_to_dt(e.ts_ms))


def _account_row(e: JournalEvent) -> tuple[Any, ...]:
    x = e.extra
    return (int(x["aid"]), e.account, x["cur"], x["type"], x["kind"], x["num"], ms_to_dt(e.ts_ms))


def _audit_row(e: JournalEvent) -> tuple[Any, ...]:
    meta = dict(e.meta)
    actor, ip = str(meta.pop("actor", "")), str(meta.pop("ip", ""))
    action = str(meta.pop("action", e.reference if e.op == "audit" else e.op))
    result = meta.pop("result", None)
    if result is None and e.op != "audit":  # a money change: its outcome is the event itself
        result = {"transaction_id": e.event_id, "operation": e.op, "amount_minor": e.amount_minor,
                  "total_after_minor": e.total_minor, "locked_after_minor": e.locked_minor}
    # a refused change's reference is in its meta (its event's ref field holds the action)
    reference = str(meta.pop("reference", ""))[:128] if e.op == "audit" else e.reference
    request = meta.pop("request", meta or None)
    return (e.event_id, actor[:128], action[:64], ip[:64], e.account, reference, request, result,
            ms_to_dt(e.ts_ms))


def _alert_row(e: JournalEvent) -> tuple[Any, ...]:
    m = e.meta
    return (e.event_id, str(m.get("account", ""))[:128], str(m.get("kind", ""))[:32],
            str(m.get("level", ""))[:16], str(m.get("message", "")), ms_to_dt(e.ts_ms))


Row = tuple[Any, ...]


def _fold_holds(events: Iterable[JournalEvent]) -> tuple[list[Row], list[Row]]:
    """Each hold's state after this batch's events (in journal order): full rows (its lock was
    in the batch; HOLD_COLUMNS) and end-only rows (it was locked in an earlier batch;
    HOLD_END_COLUMNS)."""
    full: dict[str, list[Any]] = {}
    ends: dict[str, list[Any]] = {}
    for e in events:
        ref = e.reference
        if e.op == "reserve_lock":
            ends.pop(ref, None)
            expires_ms = int(e.extra.get("exp", "0"))
            full[ref] = [ref, e.account, e.amount_minor, 0, "pending", e.extra.get("optype", ""),
                         ms_to_dt(e.ts_ms), ms_to_dt(expires_ms) if expires_ms else None, None,
                         e.event_id]
            continue
        commit = e.op == "reserve_commit"
        held = int(e.extra["held"]) if commit else e.amount_minor
        committed = e.amount_minor if commit else 0
        state, ended_at = _HOLD_END_STATE[e.op], ms_to_dt(e.ts_ms)
        row = full.get(ref)
        if row is not None:  # amount, committed, state; ended_at, last_event_id (HOLD_COLUMNS)
            row[2], row[3], row[4], row[8], row[9] = held, committed, state, ended_at, e.event_id
        else:
            ends[ref] = [ref, e.account, "", state, held, committed, ended_at, e.event_id]
    return [tuple(r) for r in full.values()], [tuple(r) for r in ends.values()]


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
        _apply(conn, reserve_accounts, ACCOUNT_COLUMNS,
               [_account_row(e) for e in events if e.op == "account_open"],
               lambda stmt, _: stmt.on_conflict_do_nothing())
        new = _apply(conn, transactions, TRANSACTION_COLUMNS, [_transaction_row(e) for e in events],
                     lambda stmt, _: stmt.on_conflict_do_nothing(index_elements=["event_id"])
                     .returning(transactions.c.event_id), direct=True)
        full, ends = _fold_holds(e for e in events if e.op in HOLD_OPERATIONS)
        _apply(conn, holds, HOLD_COLUMNS, full, _newer_hold_wins, direct=True)
        # An end whose lock came in an earlier batch keeps the lock's operation type (its
        # created_at and expiry are not in the row at all).
        _apply(conn, holds, HOLD_END_COLUMNS, ends,
               functools.partial(_newer_hold_wins, keep=("operation_type",)))
        audits = [_audit_row(e) for e in events
                  if e.op == "audit" or (e.op in MONEY_OPERATIONS and "actor" in e.meta)]
        _apply(conn, audit_log, AUDIT_COLUMNS, audits,
               lambda stmt, _: stmt.on_conflict_do_nothing(index_elements=["event_id"]))
        self._write_alerts(conn, [e for e in events if e.op in ALERT_OPERATIONS])
        return new

    def _write_alerts(self, conn: sa.Connection, events: Sequence[JournalEvent]) -> None:
        """An alert row per raise (its id is the raise's event id), ended by its clear."""
        _apply(conn, alerts, ALERT_COLUMNS,
               [_alert_row(e) for e in events if e.op == "alert_raised"],
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

    def flow_snapshots(self) -> Iterator[sa.Row[Any]]:
        """The journalled flow records (audit `flow_state` of actor `flows`), oldest first,
        read in bounded chunks: request JSON {kind, reference_id, record}."""
        a = audit_log
        stmt = (sa.select(a.c.event_id, a.c.request)
                .where(a.c.actor == "flows", a.c.action == "flow_state")
                .order_by(a.c.event_id))
        try:
            with self.engine.connect() as conn:
                result = conn.execution_options(yield_per=limits.rebuild_pipeline_max).execute(
                    stmt)
                yield from result
        except sa.exc.SQLAlchemyError as exc:
            raise translate(exc) from exc

    def audit_page(self, query: AuditQuery) -> list[sa.Row[Any]]:
        """Audit rows newest first (by event id), filtered; below query.before_event_id."""
        a = audit_log
        stmt = sa.select(a).order_by(a.c.event_id.desc()).limit(query.limit)
        if query.actor is not None:
            stmt = stmt.where(a.c.actor == query.actor)
        if query.action is not None:
            stmt = stmt.where(a.c.action.in_((query.action, f"{query.action}{REFUSED_SUFFIX}")))
        else:  # the flows' record snapshots (flow_snapshots) only when asked for
            stmt = stmt.where(a.c.action != "flow_state")
        if query.outcome is not None:
            refused = a.c.action.endswith(REFUSED_SUFFIX, autoescape=True)
            stmt = stmt.where(refused if query.outcome == "refused" else sa.not_(refused))
        if query.reference is not None:
            stmt = stmt.where(a.c.reference == query.reference)
        if query.since_ms is not None:
            stmt = stmt.where(a.c.created_at >= ms_to_dt(query.since_ms))
        if query.until_ms is not None:
            stmt = stmt.where(a.c.created_at < ms_to_dt(query.until_ms))
        if query.before_event_id is not None:
            stmt = stmt.where(a.c.event_id < query.before_event_id)
        return self._read(stmt)

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

    # -- scheduled reports ----------------------------------------------------------------------

    def claim_report(self, period: str, start: datetime, end: datetime, owner: str,
                     now: datetime, lease_s: float) -> bool:
        """Take (period, start) for owner: True when it is new, or unfinished and either owner's
        own (an earlier attempt failed) or taken more than lease_s ago (its process died). The
        primary key makes one of several racing claims win; a finished report is never claimed
        again."""
        start, end, now = start.astimezone(UTC), end.astimezone(UTC), now.astimezone(UTC)
        r = reports
        try:
            with self.engine.begin() as conn:
                insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
                stmt = insert(r).values(period=period, period_start=start, period_end=end,
                                        claimed_by=owner, claimed_at=now)
                if conn.execute(stmt.on_conflict_do_nothing()).rowcount == 1:
                    return True
                stale = (sa.update(r)
                         .where(r.c.period == period, r.c.period_start == start,
                                r.c.written_at.is_(None),
                                sa.or_(r.c.claimed_by == owner,
                                       r.c.claimed_at < now - timedelta(seconds=lease_s)))
                         .values(claimed_by=owner, claimed_at=now))
                return bool(conn.execute(stale).rowcount == 1)
        except sa.exc.SQLAlchemyError as exc:
            raise translate(exc) from exc

    def finish_report(self, period: str, start: datetime, owner: str, now: datetime,
                      path: str) -> bool:
        """Mark the files of a claimed report written; False when owner no longer holds it."""
        r = reports
        stmt = (sa.update(r)
                .where(r.c.period == period, r.c.period_start == start.astimezone(UTC),
                       r.c.claimed_by == owner, r.c.written_at.is_(None))
                .values(written_at=now.astimezone(UTC), path=path))
        try:
            with self.engine.begin() as conn:
                return bool(conn.execute(stmt).rowcount == 1)
        except sa.exc.SQLAlchemyError as exc:
            raise translate(exc) from exc

    def report_rows(self) -> list[sa.Row[Any]]:
        return self._read(sa.select(reports).order_by(reports.c.period, reports.c.period_start))
