"""venue_circuits: the per-venue circuit breaker's state, shared by every worker (perpflow.circuit).

Upgrade: the table is made empty (every venue starts closed). Downgrade: it is dropped; no other
table changes.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _ts(name: str, **kw) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), **kw)


def upgrade() -> None:
    op.create_table(
        "venue_circuits",
        sa.Column("exchange", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        _ts("down_since"),
        _ts("opened_at"),
        _ts("probe_at"),
        sa.Column("last_error", sa.Text),
        _ts("updated_at", nullable=False),
        sa.CheckConstraint(
            "state IN ('closed', 'open', 'half_open')", name="venue_circuits_state_check"
        ),
    )


def downgrade() -> None:
    op.drop_table("venue_circuits")
