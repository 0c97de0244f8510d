"""The book of record: accounts, transactions (the journal), holds, audit log, alerts.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "reserve_accounts",
        sa.Column("id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("currency", sa.String(16), nullable=False),
        sa.Column("account_type", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("account_number", sa.String(64), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reserve_accounts"),
        sa.UniqueConstraint("label", name="uq_reserve_accounts_label"),
        sa.CheckConstraint("account_type IN ('crypto', 'fiat')",
                           name="ck_reserve_accounts_account_type"),
        sa.CheckConstraint("kind IN ('reserve', 'user')", name="ck_reserve_accounts_kind"),
    )
    op.create_index("ix_reserve_accounts_currency_account_type", "reserve_accounts",
                    ["currency", "account_type"])

    op.create_table(
        "transactions",
        sa.Column("event_id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("account", sa.String(128), nullable=False),
        sa.Column("operation", sa.String(32), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("d_total_minor", sa.BigInteger, nullable=False),
        sa.Column("d_locked_minor", sa.BigInteger, nullable=False),
        sa.Column("total_after_minor", sa.BigInteger, nullable=False),
        sa.Column("locked_after_minor", sa.BigInteger, nullable=False),
        sa.Column("metadata", sa.JSON, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_transactions"),
        sa.CheckConstraint("amount_minor >= 0", name="ck_transactions_amount_minor"),
        sa.CheckConstraint("total_after_minor >= locked_after_minor",
                           name="ck_transactions_total_after_minor"),
        sa.CheckConstraint("locked_after_minor >= 0", name="ck_transactions_locked_after_minor"),
    )
    op.create_index("ix_transactions_account_event_id", "transactions", ["account", "event_id"])
    op.create_index("ix_transactions_created_at", "transactions", ["created_at"])
    op.create_index("ix_transactions_reference", "transactions", ["reference"])

    op.create_table(
        "holds",
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("account", sa.String(128), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("committed_minor", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("operation_type", sa.String(64), nullable=False),
        sa.Column("created_at", Timestamp, nullable=True),
        sa.Column("expires_at", Timestamp, nullable=True),
        sa.Column("ended_at", Timestamp, nullable=True),
        sa.Column("last_event_id", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("reference", name="pk_holds"),
        sa.CheckConstraint("state IN ('pending', 'committed', 'released', 'expired')",
                           name="ck_holds_state"),
        sa.CheckConstraint("amount_minor >= committed_minor", name="ck_holds_committed_minor"),
        sa.CheckConstraint("committed_minor >= 0", name="ck_holds_committed_minor_positive"),
    )
    op.create_index("ix_holds_account_state", "holds", ["account", "state"])
    op.create_index("ix_holds_created_at", "holds", ["created_at"])

    op.create_table(
        "audit_log",
        sa.Column("event_id", sa.BigInteger, autoincrement=False, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("ip", sa.String(64), nullable=False),
        sa.Column("account", sa.String(128), nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("request", sa.JSON, nullable=True),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_created_at", "audit_log", ["created_at"])
    op.create_index("ix_audit_log_actor", "audit_log", ["actor"])

    op.create_table(
        "alerts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), autoincrement=True,
                  nullable=False),
        sa.Column("account", sa.String(128), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("raised_at", Timestamp, nullable=False),
        sa.Column("cleared_at", Timestamp, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
    )
    op.create_index("ix_alerts_account_raised_at", "alerts", ["account", "raised_at"])
    op.create_index("ix_alerts_raised_at", "alerts", ["raised_at"])


def downgrade() -> None:
    op.drop_index("ix_alerts_raised_at", table_name="alerts")
    op.drop_index("ix_alerts_account_raised_at", table_name="alerts")
    op.drop_table("alerts")
    op.drop_index("ix_audit_log_actor", table_name="audit_log")
    op.drop_index("ix_audit_log_created_at", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("ix_holds_created_at", table_name="holds")
    op.drop_index("ix_holds_account_state", table_name="holds")
    op.drop_table("holds")
    op.drop_index("ix_transactions_reference", table_name="transactions")
    op.drop_index("ix_transactions_created_at", table_name="transactions")
    op.drop_index("ix_transactions_account_event_id", table_name="transactions")
    op.drop_table("transactions")
    op.drop_index("ix_reserve_accounts_currency_account_type", table_name="reserve_accounts")
    op.drop_table("reserve_accounts")
