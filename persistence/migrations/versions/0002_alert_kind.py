"""Alerts: the kind of an alert (utilization, floor, persister_lag, ...), filled from the journal.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:  # batch: SQLite cannot ALTER in place
        batch.add_column(sa.Column("kind", sa.String(32), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_column("kind")
