"""Reports: one row per scheduled report, claimed before its files are written (exactly once).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("period_start", Timestamp, nullable=False),
        sa.Column("period_end", Timestamp, nullable=False),
        sa.Column("claimed_by", sa.String(128), nullable=False),
        sa.Column("claimed_at", Timestamp, nullable=False),
        sa.Column("written_at", Timestamp, nullable=True),
        sa.Column("path", sa.String(1024), nullable=True),
        sa.PrimaryKeyConstraint("period", "period_start", name="pk_reports"),
        sa.CheckConstraint("period IN ('daily', 'weekly', 'monthly')", name="ck_reports_period"),
        sa.CheckConstraint("period_end > period_start", name="ck_reports_period_end"),
    )


def downgrade() -> None:
    op.drop_table("reports")
