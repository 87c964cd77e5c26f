"""Monitoring tables: data-quality results, funding-history gaps, health snapshots.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _ts(name: str, **kw) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), **kw)


def upgrade() -> None:
    op.create_table(
        "quality_results",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("expectation", sa.String(128), primary_key=True),
        sa.Column("dataset", sa.String(32), nullable=False),
        sa.Column("expectation_type", sa.String(128), nullable=False),
        sa.Column("success", sa.Boolean, nullable=False),
        sa.Column("element_count", sa.Integer),
        sa.Column("unexpected_count", sa.Integer),
        sa.Column("unexpected_percent", sa.Float),
        sa.Column("examples", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
        _ts("window_start", nullable=False),
        _ts("window_end", nullable=False),
        _ts("checked_at", nullable=False),
    )
    op.create_table(
        "funding_gaps",
        sa.Column("exchange", sa.String(64), primary_key=True),
        sa.Column("symbol", sa.String(128), primary_key=True),
        _ts("gap_from", primary_key=True),
        _ts("gap_to", nullable=False),
        sa.Column("interval_hours", sa.Float, nullable=False),
        sa.Column("missing", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text),
        _ts("found_at", nullable=False),
        sa.Column("found_run_id", sa.String(64)),
        _ts("resolved_at"),
        sa.Column("resolved_run_id", sa.String(64)),
    )
    op.create_table(
        "health_snapshots",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(160), primary_key=True),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("unit", sa.String(16)),
        sa.Column("detail", sa.Text),
        _ts("taken_at", nullable=False),
    )


def downgrade() -> None:
    for table in ("health_snapshots", "funding_gaps", "quality_results"):
        op.drop_table(table)
