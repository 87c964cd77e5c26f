"""collection_ledger: what a step could not fetch (``failed`` and which symbols) and ``attempts``.

With these, every ledger row balances: ``requested = stored + duplicates + quarantined + failed``,
failed steps included, and a step's per-symbol failures are listed with their errors.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    with op.batch_alter_table("collection_ledger") as batch:
        batch.add_column(sa.Column("failed", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("failed_symbols", json))
        batch.add_column(sa.Column("attempts", sa.Integer, nullable=False, server_default="1"))
    # Failed steps recorded before this revision meant to fetch what they requested.
    op.execute("UPDATE collection_ledger SET failed = requested - stored - duplicates - quarantined "
               "WHERE status = 'failed'")


def downgrade() -> None:
    with op.batch_alter_table("collection_ledger") as batch:
        batch.drop_column("attempts")
        batch.drop_column("failed_symbols")
        batch.drop_column("failed")
