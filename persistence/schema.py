"""The tables of the book of record (SQLAlchemy Core). Only definitions: queries live in store.py,
changes to these tables in migrations/ (a test checks the two agree).

Amounts are integer minor units (BIGINT: every amount and balance is below 2^53). Times are
timestamps with time zone, converted exactly from the journal's milliseconds.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Timestamp = sa.DateTime(timezone=True)

reserve_accounts = sa.Table(
    "reserve_accounts", metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),  # the engine's id
    sa.Column("label", sa.String(128), nullable=False),
    sa.Column("currency", sa.String(16), nullable=False),
    sa.Column("account_type", sa.String(16), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("account_number", sa.String(64), nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.UniqueConstraint("label"),
    sa.CheckConstraint("account_type IN ('crypto', 'fiat')", name="account_type"),
    sa.CheckConstraint("kind IN ('reserve', 'user')", name="kind"),
    sa.Index(None, "currency", "account_type"),
)

# One row per journal event, the event id as key: a replayed event is a no-op.
transactions = sa.Table(
    "transactions", metadata,
    sa.Column("event_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("account", sa.String(128), nullable=False),  # label; "" for audit events
    sa.Column("operation", sa.String(32), nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("reference", sa.String(128), nullable=False),
    sa.Column("d_total_minor", sa.BigInteger, nullable=False),
    sa.Column("d_locked_minor", sa.BigInteger, nullable=False),
    sa.Column("total_after_minor", sa.BigInteger, nullable=False),
    sa.Column("locked_after_minor", sa.BigInteger, nullable=False),
    sa.Column("metadata", sa.JSON, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.CheckConstraint("amount_minor >= 0", name="amount_minor"),
    sa.CheckConstraint("total_after_minor >= locked_after_minor", name="total_after_minor"),
    sa.CheckConstraint("locked_after_minor >= 0", name="locked_after_minor"),
    sa.Index(None, "account", "event_id"),
    sa.Index(None, "created_at"),
    sa.Index(None, "reference"),
)

holds = sa.Table(
    "holds", metadata,
    sa.Column("reference", sa.String(128), primary_key=True),
    sa.Column("account", sa.String(128), nullable=False),
    sa.Column("amount_minor", sa.BigInteger, nullable=False),
    sa.Column("committed_minor", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("operation_type", sa.String(64), nullable=False),
    sa.Column("created_at", Timestamp, nullable=True),  # null: only its end was seen so far
    sa.Column("expires_at", Timestamp, nullable=True),  # null: no TTL
    sa.Column("ended_at", Timestamp, nullable=True),  # null: pending
    sa.Column("last_event_id", sa.BigInteger, nullable=False),  # an older event never overwrites
    sa.CheckConstraint("state IN ('pending', 'committed', 'released', 'expired')", name="state"),
    sa.CheckConstraint("amount_minor >= committed_minor", name="committed_minor"),
    sa.CheckConstraint("committed_minor >= 0", name="committed_minor_positive"),
    sa.Index(None, "account", "state"),
    sa.Index(None, "created_at"),
)

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("event_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("ip", sa.String(64), nullable=False),
    sa.Column("account", sa.String(128), nullable=False),
    sa.Column("reference", sa.String(128), nullable=False),
    sa.Column("request", sa.JSON, nullable=True),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Index(None, "created_at"),
    sa.Index(None, "actor"),
)

alerts = sa.Table(
    "alerts", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("account", sa.String(128), nullable=False),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False, server_default=""),
    sa.Column("raised_at", Timestamp, nullable=False),
    sa.Column("cleared_at", Timestamp, nullable=True),
    sa.Index(None, "account", "raised_at"),
    sa.Index(None, "raised_at"),
)

# One row per scheduled report: (period, period_start) is claimed by one process before it writes
# the files, so each report is written once however many processes run the schedule.
reports = sa.Table(
    "reports", metadata,
    sa.Column("period", sa.String(16), nullable=False),
    sa.Column("period_start", Timestamp, nullable=False),
    sa.Column("period_end", Timestamp, nullable=False),
    sa.Column("claimed_by", sa.String(128), nullable=False),
    sa.Column("claimed_at", Timestamp, nullable=False),
    sa.Column("written_at", Timestamp, nullable=True),  # null: claimed, files not written yet
    sa.Column("path", sa.String(1024), nullable=True),  # the files, without .csv / .html
    sa.PrimaryKeyConstraint("period", "period_start"),
    sa.CheckConstraint("period IN ('daily', 'weekly', 'monthly')", name="period"),
    sa.CheckConstraint("period_end > period_start", name="period_end"),
)
