"""Foundation schema: instruments, tickers, funding_rates, funding_history, quarantine,
collection_ledger (exactly what ``metadata.create_all`` made before migrations existed).

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, **kw) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), **kw)


def upgrade() -> None:
    op.create_table(
        "instruments",
        sa.Column("exchange", sa.String(64), primary_key=True),
        sa.Column("symbol", sa.String(128), primary_key=True),
        sa.Column("market_id", sa.String(128)),
        sa.Column("base", sa.String(32)),
        sa.Column("quote", sa.String(32)),
        sa.Column("settle", sa.String(32)),
        sa.Column("linear", sa.Boolean),
        sa.Column("inverse", sa.Boolean),
        sa.Column("contract_size", sa.Float),
        sa.Column("funding_interval_hours", sa.Float),
        sa.Column("active", sa.Boolean, nullable=False),
        _ts("first_seen", nullable=False),
        _ts("last_seen", nullable=False),
    )
    op.create_table(
        "tickers",
        sa.Column("exchange", sa.String(64), primary_key=True),
        sa.Column("symbol", sa.String(128), primary_key=True),
        _ts("ts", primary_key=True),
        sa.Column("ts_source", sa.String(16), nullable=False),
        sa.Column("bid", sa.Float),
        sa.Column("ask", sa.Float),
        sa.Column("last", sa.Float),
        sa.Column("mark_price", sa.Float),
        sa.Column("index_price", sa.Float),
        sa.Column("base_volume", sa.Float),
        sa.Column("quote_volume", sa.Float),
        _ts("collected_at", nullable=False),
        sa.Column("run_id", sa.String(64)),
    )
    op.create_table(
        "funding_rates",
        sa.Column("exchange", sa.String(64), primary_key=True),
        sa.Column("symbol", sa.String(128), primary_key=True),
        _ts("ts", primary_key=True),
        sa.Column("ts_source", sa.String(16), nullable=False),
        sa.Column("funding_rate", sa.Float, nullable=False),
        _ts("funding_ts"),
        sa.Column("next_funding_rate", sa.Float),
        _ts("next_funding_ts"),
        sa.Column("mark_price", sa.Float),
        sa.Column("index_price", sa.Float),
        sa.Column("interval_hours", sa.Float),
        _ts("collected_at", nullable=False),
        sa.Column("run_id", sa.String(64)),
    )
    op.create_table(
        "funding_history",
        sa.Column("exchange", sa.String(64), primary_key=True),
        sa.Column("symbol", sa.String(128), primary_key=True),
        _ts("funding_ts", primary_key=True),
        sa.Column("funding_rate", sa.Float, nullable=False),
        sa.Column("interval_hours", sa.Float),
        _ts("collected_at", nullable=False),
        sa.Column("run_id", sa.String(64)),
    )
    op.create_table(
        "quarantine",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("exchange", sa.String(64), nullable=False),
        sa.Column("dataset", sa.String(32), nullable=False),
        sa.Column("symbol", sa.String(128)),
        sa.Column(
            "payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(64)),
        _ts("quarantined_at", nullable=False),
    )
    op.create_table(
        "collection_ledger",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("exchange", sa.String(64), primary_key=True),
        sa.Column("dataset", sa.String(32), primary_key=True),
        sa.Column("requested", sa.Integer, nullable=False),
        sa.Column("received", sa.Integer, nullable=False),
        sa.Column("stored", sa.Integer, nullable=False),
        sa.Column("duplicates", sa.Integer, nullable=False),
        sa.Column("quarantined", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("latency_ms", sa.Float),
        _ts("started_at", nullable=False),
        _ts("finished_at", nullable=False),
    )


def downgrade() -> None:
    for table in (
        "collection_ledger",
        "quarantine",
        "funding_history",
        "funding_rates",
        "tickers",
        "instruments",
    ):
        op.drop_table(table)
