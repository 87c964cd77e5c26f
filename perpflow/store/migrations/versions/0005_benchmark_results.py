"""benchmark_results: one measured figure per run-benchmarks run, with its machine.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "benchmark_results",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("better", sa.String(8), nullable=False),
        sa.Column("baseline", sa.String(128)),
        sa.Column("ratio", sa.Float),
        sa.Column("budget", sa.Float),
        sa.Column("regression", sa.Boolean, nullable=False),
        sa.Column("note", sa.Text),
        sa.Column("cores", sa.Integer, nullable=False),
        sa.Column("memory_bytes", sa.BigInteger, nullable=False),
        sa.Column("python", sa.String(32), nullable=False),
        sa.Column("db_server", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("benchmark_results")
