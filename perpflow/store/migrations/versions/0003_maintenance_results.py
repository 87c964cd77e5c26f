"""maintenance_results: the maintain-database report's figures per run and object.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "maintenance_results",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("object", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("table_name", sa.String(128)),
        sa.Column("size_before", sa.BigInteger),
        sa.Column("size_after", sa.BigInteger),
        sa.Column("dead_before", sa.BigInteger),
        sa.Column("dead_after", sa.BigInteger),
        sa.Column("bloat_before", sa.Float),
        sa.Column("bloat_after", sa.Float),
        sa.Column("bloat_source", sa.String(16)),
        sa.Column("actions", sa.Text),
        sa.Column("seconds", sa.Float),
        sa.Column("detail", sa.Text),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("maintenance_results")
