"""funding_coverage (proven coverage of realized funding) and funding_intervals (interval history).

Upgrade: both tables are made; an existing database's coverage starts as each instrument's stored
settlements, first to newest (``updated_at``: when the newest was collected), and its intervals as
the instrument's recorded interval, in force since the instrument was first seen (source
``venue``: where it came from), and ``instruments.funding_interval_hours`` is dropped (the
interval lives in ``funding_intervals`` now, with its history). Downgrade: the column comes back
with the interval in force now, then both tables are dropped; every row of the older tables
stays as it is.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _ts(name: str, **kw) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), **kw)


def upgrade() -> None:
    op.create_table(
        "funding_coverage",
        sa.Column("exchange", sa.String(64), primary_key=True),
        sa.Column("symbol", sa.String(128), primary_key=True),
        _ts("covered_from", nullable=False),
        _ts("covered_to", nullable=False),
        _ts("updated_at", nullable=False),
        sa.Column("run_id", sa.String(64)),
    )
    op.create_table(
        "funding_intervals",
        sa.Column("exchange", sa.String(64), primary_key=True),
        sa.Column("symbol", sa.String(128), primary_key=True),
        _ts("valid_from", primary_key=True),
        _ts("valid_to"),
        sa.Column("interval_hours", sa.Float, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.CheckConstraint(
            "source IN ('venue', 'inferred')", name="funding_intervals_source_check"
        ),
    )
    # Same column types as the source tables: values are copied in their stored form.
    op.execute(
        "INSERT INTO funding_coverage (exchange, symbol, covered_from, covered_to, updated_at) "
        "SELECT exchange, symbol, MIN(funding_ts), MAX(funding_ts), MAX(collected_at) "
        "FROM funding_history GROUP BY exchange, symbol"
    )
    op.execute(
        "INSERT INTO funding_intervals "
        "(exchange, symbol, valid_from, valid_to, interval_hours, source) "
        "SELECT exchange, symbol, first_seen, NULL, funding_interval_hours, 'venue' "
        "FROM instruments WHERE funding_interval_hours IS NOT NULL"
    )
    # The interval lives in funding_intervals from now on (with its history).
    with op.batch_alter_table("instruments") as batch:
        batch.drop_column("funding_interval_hours")


def downgrade() -> None:
    with op.batch_alter_table("instruments") as batch:
        batch.add_column(sa.Column("funding_interval_hours", sa.Float))
    op.execute(
        "UPDATE instruments SET funding_interval_hours = ("
        "SELECT fi.interval_hours FROM funding_intervals fi WHERE fi.exchange = "
        "instruments.exchange AND fi.symbol = instruments.symbol AND fi.valid_to IS NULL) "
        "WHERE EXISTS (SELECT 1 FROM funding_intervals fi WHERE fi.exchange = "
        "instruments.exchange AND fi.symbol = instruments.symbol AND fi.valid_to IS NULL)"
    )
    op.drop_table("funding_intervals")
    op.drop_table("funding_coverage")
