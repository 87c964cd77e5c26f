"""The daily completeness certificate table; the partition function refuses a collector other days.

``completeness``: one row per (venue, dataset, UTC day) with what was expected, stored, explained
(reasons) and unexplained (``perpflow.completeness``). PostgreSQL: ``perpflow_ensure_partition``
makes any day's partition for its owner (the maintainer) or a member of it (superusers
included); any other caller (the collector, through SECURITY DEFINER) may only open today's or
tomorrow's (UTC), so a collector cannot fill the schema with partitions for arbitrary days; a
partition that exists is accepted for any day and any caller (a row whose venue time is
yesterday's still goes in).
Downgrade: the table is dropped and the function is restored as revision 0002 made it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import text

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# Revision 0010's race-free body, with the day check of a caller who is not the function's owner.
GUARDED_PARTITION = """
CREATE OR REPLACE FUNCTION perpflow_ensure_partition(parent text, day date) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = {schema}, pg_temp SET lock_timeout = '5s' AS $fn$
DECLARE
    part text := parent || '_p' || to_char(day, 'YYYYMMDD');
    today date := (now() AT TIME ZONE 'UTC')::date;
BEGIN
    IF parent NOT IN ('tickers', 'funding_rates') THEN
        RAISE EXCEPTION 'perpflow_ensure_partition: parent % is not a partitioned table', parent;
    END IF;
    IF to_regclass(part) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    -- current_user is the owner here (SECURITY DEFINER); session_user is who logged in.
    IF day NOT IN (today, today + 1) AND NOT pg_has_role(session_user, current_user, 'MEMBER')
    THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = format(
            'perpflow_ensure_partition: %s may only open today''s or tomorrow''s partition '
            '(UTC %s or %s), not %s', session_user, today, today + 1, day);
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(part));  -- two writers meeting the same new day
    BEGIN
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                       part, parent, day::text || ' 00:00:00+00',
                       (day + 1)::text || ' 00:00:00+00');
    EXCEPTION WHEN duplicate_table THEN
        RETURN NULL;  -- the other writer made it (committed while this one waited)
    END;
    RETURN part;
END
$fn$
"""


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "completeness",
        sa.Column("exchange", sa.String(64), primary_key=True),
        sa.Column("dataset", sa.String(32), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("instruments", sa.Integer, nullable=False),
        sa.Column("expected", sa.Integer, nullable=False),
        sa.Column("stored", sa.Integer, nullable=False),
        sa.Column("explained", sa.Integer, nullable=False),
        sa.Column("unexplained", sa.Integer, nullable=False),
        sa.Column("reasons", _json()),
        sa.Column("detail", sa.Text),
        sa.Column("certified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(64)),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        schema = bind.execute(text("SELECT quote_ident(current_schema())")).scalar_one()
        op.execute(GUARDED_PARTITION.format(schema=schema))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        from importlib import import_module

        previous = import_module("perpflow.store.migrations.versions.0010_trust")
        schema = bind.execute(text("SELECT quote_ident(current_schema())")).scalar_one()
        op.execute(previous.ENSURE_PARTITION.format(schema=schema))
    op.drop_table("completeness")
