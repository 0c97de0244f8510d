"""The newest transactions of the book of record, for the dashboard's "recent" list.

The persister trims the journal streams below what it has written, so once persisted an event
is only in the database: the dashboard merges these rows with the stream's unpersisted tail.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from persistence.errors import translate
from persistence.schema import transactions
from persistence.store import dt_to_ms, shared_engine


@dataclass(frozen=True, slots=True)
class RecentRow:
    event_id: int
    operation: str
    account: str
    reference: str
    amount_minor: int
    ts_ms: int


def recent_transactions(database_url: str, limit: int) -> list[RecentRow]:
    """The newest `limit` transactions, newest first."""
    t = transactions
    stmt = (sa.select(t.c.event_id, t.c.operation, t.c.account, t.c.reference, t.c.amount_minor,
                      t.c.created_at)
            .order_by(t.c.created_at.desc(), t.c.event_id.desc()).limit(limit))
    try:
        with shared_engine(database_url).connect() as conn:
            rows = list(conn.execute(stmt))
    except sa.exc.SQLAlchemyError as exc:
        raise translate(exc) from exc
    return [RecentRow(int(r.event_id), r.operation, r.account, r.reference, int(r.amount_minor),
                      dt_to_ms(r.created_at)) for r in rows]
