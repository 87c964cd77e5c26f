"""Quarantine held once per refused value, ledger rows that know their batch, a race-free
partition function.

Upgrade:

- ``quarantine.digest``: hex SHA-256 of ``[exchange, dataset, symbol, reason, payload]`` as
  canonical JSON (``perpflow.store.schema.quarantine_digest``; the rule is frozen below), unique.
  Existing rows get their digest; where earlier runs quarantined the same payload for the same
  reason again (a history row on every sweep, a retried store), the earliest row is kept and the
  repeats are deleted (they held nothing else than a later ``run_id`` and time; the ledger rows of
  those runs still count what each refused).
- ``collection_ledger.batch_id``: the identity of the batch a row accounts for (NULL on older
  rows), so that a store retried after a commit whose acknowledgement was lost finds its own row.
- PostgreSQL: ``perpflow_ensure_partition`` is replaced by one that two sessions can call for the
  same new day at once. Revision 0002's re-check after the advisory lock can miss the other
  session's just-committed partition (the name lookup is not refreshed by an advisory lock), so
  the second ``CREATE TABLE`` failed with "relation already exists"; now that error
  (``duplicate_table``) means the partition exists, and the function returns NULL as for any
  existing partition.

Downgrade: the digest column and its key, and ``batch_id``, are dropped (deleted repeats are not
restored); the function of revision 0002 is put back.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

PAGE = 10_000

ENSURE_PARTITION = """
CREATE OR REPLACE FUNCTION perpflow_ensure_partition(parent text, day date) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = {schema}, pg_temp SET lock_timeout = '5s' AS $fn$
DECLARE
    part text := parent || '_p' || to_char(day, 'YYYYMMDD');
BEGIN
    IF parent NOT IN ('tickers', 'funding_rates') THEN
        RAISE EXCEPTION 'perpflow_ensure_partition: parent % is not a partitioned table', parent;
    END IF;
    IF to_regclass(part) IS NOT NULL THEN
        RETURN NULL;
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


def _digest(exchange, dataset, symbol, reason, payload) -> str:
    # ``perpflow.store.schema.quarantine_digest`` as of this revision.
    text = json.dumps(
        [exchange, dataset, symbol, reason, payload],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _payload(value):
    return json.loads(value) if isinstance(value, str) else value


def _digest_existing(bind) -> None:
    """Give every quarantine row its digest; delete later repeats of a digest (min id kept)."""
    rows = sa.table(
        "quarantine",
        sa.column("id"),
        sa.column("exchange"),
        sa.column("dataset"),
        sa.column("symbol"),
        sa.column("payload", sa.JSON()),
        sa.column("reason"),
        sa.column("digest"),
    )
    seen: dict[str, int] = {}
    repeats: list[int] = []
    last = None
    while True:
        query = sa.select(rows.c.id, rows.c.exchange, rows.c.dataset, rows.c.symbol,
                          rows.c.payload, rows.c.reason).order_by(rows.c.id).limit(PAGE)
        if last is not None:
            query = query.where(rows.c.id > last)
        page = bind.execute(query).all()
        if not page:
            break
        updates = []
        for row in page:
            digest = _digest(row.exchange, row.dataset, row.symbol, row.reason,
                             _payload(row.payload))
            if digest in seen:
                repeats.append(row.id)
            else:
                seen[digest] = row.id
                updates.append({"row_id": row.id, "value": digest})
        if updates:
            bind.execute(
                rows.update().where(rows.c.id == sa.bindparam("row_id"))
                .values(digest=sa.bindparam("value")),
                updates,
            )
        last = page[-1].id
    for start in range(0, len(repeats), PAGE):
        bind.execute(rows.delete().where(rows.c.id.in_(repeats[start:start + PAGE])))


def _revision_0002_function() -> str:
    path = Path(__file__).with_name("0002_daily_partitions.py")
    spec = importlib.util.spec_from_file_location("perpflow_revision_0002", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ENSURE_PARTITION


def _schema(bind) -> str:
    return bind.execute(sa.text("SELECT quote_ident(current_schema())")).scalar_one()


def upgrade() -> None:
    bind = op.get_bind()
    op.add_column("quarantine", sa.Column("digest", sa.String(64)))
    _digest_existing(bind)
    with op.batch_alter_table("quarantine") as batch:
        batch.alter_column("digest", existing_type=sa.String(64), nullable=False)
        batch.create_unique_constraint("quarantine_digest_key", ["digest"])
    op.add_column("collection_ledger", sa.Column("batch_id", sa.String(64)))
    if bind.dialect.name == "postgresql":
        op.execute(ENSURE_PARTITION.format(schema=_schema(bind)))


def downgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("collection_ledger") as batch:
        batch.drop_column("batch_id")
    with op.batch_alter_table("quarantine") as batch:
        batch.drop_constraint("quarantine_digest_key", type_="unique")
        batch.drop_column("digest")
    if bind.dialect.name == "postgresql":
        op.execute(_revision_0002_function().format(schema=_schema(bind)).replace("%%", "%"))
