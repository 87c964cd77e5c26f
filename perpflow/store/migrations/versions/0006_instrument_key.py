"""tickers and funding_rates keyed by (instrument_key, ts); instruments.instrument_key unique.

``instrument_key`` is the 64-bit digest of ``(exchange, symbol)`` that ``perpflow.store.schema``
defines; it is computed here once per distinct pair (the same function, frozen below) and
written to every existing row, then the primary keys are swapped. ``exchange`` and ``symbol``
stay as NOT NULL columns. PostgreSQL: the partitioned parents' keys (and so every partition's)
are replaced in place. SQLite: the two tables are made anew with the new key and refilled.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

KEYED = ("tickers", "funding_rates")


def _key(exchange: str, symbol: str) -> int:
    digest = hashlib.sha256(f"{exchange}\x1f{symbol}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _fill(table: str) -> None:
    conn = op.get_bind()
    op.add_column(table, sa.Column("instrument_key", sa.BigInteger, nullable=True))
    pairs = conn.execute(sa.text(f"SELECT DISTINCT exchange, symbol FROM {table}")).all()
    if pairs:
        conn.execute(
            sa.text(
                f"UPDATE {table} SET instrument_key = :key "
                "WHERE exchange = :exchange AND symbol = :symbol"
            ),
            [{"key": _key(e, s), "exchange": e, "symbol": s} for e, s in pairs],
        )


def _rebuild_sqlite(table: str, key: list[str]) -> None:
    """SQLite cannot change a primary key: the table is made anew with the same columns (NOT NULL
    as before; ``instrument_key`` NOT NULL when kept) and primary key ``key``, and refilled."""
    columns = sa.inspect(op.get_bind()).get_columns(table)
    names = ", ".join(f'"{c["name"]}"' for c in columns)
    op.rename_table(table, f"{table}_old")
    op.create_table(
        table,
        *(
            sa.Column(c["name"], c["type"], nullable=c["nullable"] and c["name"] != "instrument_key")
            for c in columns
        ),
        sa.PrimaryKeyConstraint(*key, name=f"{table}_pkey"),
    )
    op.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {table}_old")
    op.drop_table(f"{table}_old")


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table in ("instruments", *KEYED):
        _fill(table)
    if postgresql:
        op.alter_column("instruments", "instrument_key", nullable=False)
        op.create_unique_constraint("instruments_instrument_key_key", "instruments", ["instrument_key"])
        for table in KEYED:
            op.alter_column(table, "instrument_key", nullable=False)
            op.drop_constraint(f"{table}_pkey", table, type_="primary")
            op.create_primary_key(f"{table}_pkey", table, ["instrument_key", "ts"])
        return
    with op.batch_alter_table("instruments", recreate="always") as batch:
        batch.alter_column("instrument_key", nullable=False)
        batch.create_unique_constraint("instruments_instrument_key_key", ["instrument_key"])
    for table in KEYED:
        _rebuild_sqlite(table, ["instrument_key", "ts"])


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table in KEYED:
        if postgresql:
            op.drop_constraint(f"{table}_pkey", table, type_="primary")
            op.create_primary_key(f"{table}_pkey", table, ["exchange", "symbol", "ts"])
            op.drop_column(table, "instrument_key")
        else:
            _rebuild_sqlite(table, ["exchange", "symbol", "ts"])
            with op.batch_alter_table(table) as batch:
                batch.drop_column("instrument_key")
    with op.batch_alter_table("instruments") as batch:
        batch.drop_constraint("instruments_instrument_key_key", type_="unique")
        batch.drop_column("instrument_key")
