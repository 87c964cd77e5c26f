"""PostgreSQL: tickers and funding_rates become daily range partitions on ts (rows moved in place).

Each table is renamed aside, recreated as ``PARTITION BY RANGE (ts)`` with the same columns and
primary key (which includes ts), given one partition per UTC day present in its rows, filled from
the old table, and the old table dropped; a BRIN index on ts serves the recent-window queries.
``perpflow_ensure_partition(table, day)`` creates a day's partition when missing (see
``perpflow.store.partitions``). SQLite: nothing to do.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import text

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = ("tickers", "funding_rates")

ENSURE_PARTITION = """
CREATE OR REPLACE FUNCTION perpflow_ensure_partition(parent text, day date) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = {schema}, pg_temp SET lock_timeout = '5s' AS $fn$
DECLARE
    part text := parent || '_p' || to_char(day, 'YYYYMMDD');
BEGIN
    IF parent NOT IN ('tickers', 'funding_rates') THEN
        RAISE EXCEPTION 'perpflow_ensure_partition: parent %% is not a partitioned table', parent;
    END IF;
    IF to_regclass(part) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(part));  -- two writers meeting the same new day
    IF to_regclass(part) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    EXECUTE format('CREATE TABLE %%I PARTITION OF %%I FOR VALUES FROM (%%L) TO (%%L)',
                   part, parent, day::text || ' 00:00:00+00', (day + 1)::text || ' 00:00:00+00');
    RETURN part;
END
$fn$
"""


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    schema = bind.execute(text("SELECT quote_ident(current_schema())")).scalar_one()
    op.execute(ENSURE_PARTITION.format(schema=schema).replace("%%", "%"))
    for table in TABLES:
        old = f"{table}_unpartitioned"
        op.execute(f"ALTER TABLE {table} RENAME TO {old}")
        op.execute(f"ALTER INDEX {table}_pkey RENAME TO {old}_pkey")
        op.execute(
            f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS INCLUDING INDEXES) "
            "PARTITION BY RANGE (ts)"
        )
        op.execute(
            f"SELECT perpflow_ensure_partition('{table}', d) FROM "
            f"(SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date AS d FROM {old}) AS days"
        )
        op.execute(f"INSERT INTO {table} SELECT * FROM {old}")
        op.execute(f"DROP TABLE {old}")
        # BRIN on ts: "latest per symbol in the last hour" reads ~1/16 of the day's pages (README).
        op.execute(f"CREATE INDEX {table}_ts_brin ON {table} USING brin (ts)")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        plain = f"{table}_plain"
        op.execute(f"CREATE TABLE {plain} (LIKE {table} INCLUDING DEFAULTS)")
        op.execute(f"INSERT INTO {plain} SELECT * FROM {table}")
        op.execute(f"DROP TABLE {table}")
        op.execute(f"ALTER TABLE {plain} RENAME TO {table}")
        op.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (exchange, symbol, ts)")
    op.execute("DROP FUNCTION perpflow_ensure_partition(text, date)")
