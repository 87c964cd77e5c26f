"""tickers and funding_rates keyed by (instrument_key, ts, obs_key); tickers.contract_volume.

Upgrade: ``tickers`` gains ``contract_volume`` (contracts, NULL on existing rows) and both tables
gain ``obs_key``, the 64-bit digest of a row's observed values that ``perpflow.store.schema``
defines (``observation_key``; computed here by the same rule, frozen below, from the values as
stored, so a re-poll returning an already-stored observation is still a duplicate). Every
existing row is read once in key order (pages of ``PAGE`` rows) and given its digest; then the
primary keys become ``(instrument_key, ts, obs_key)``. PostgreSQL: the partitioned parents' keys
(and so every partition's) are replaced in place. SQLite: the tables are made anew and refilled.
Rows a previous downgrade set aside (``<table>_displaced``, below) are put back, and that table
is dropped. Existing values are not rewritten: rows stored before this revision keep the volumes
ccxt gave.

Downgrade: the key goes back to ``(instrument_key, ts)``, which holds one row per instrument and
time. Where several observations share ``(instrument_key, ts)`` (values changed between polls),
the table keeps the one with the newest ``collected_at`` (on a tie, the larger ``obs_key``) and
the others are moved, whole, into ``<table>_displaced`` (a plain table of this revision's
columns), so no row is lost; upgrading again puts them back. ``obs_key`` and
``tickers.contract_volume`` are dropped from the kept rows (the moved rows keep theirs).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import hashlib
import math
import struct
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

PAGE = 10_000
TIMES = {"funding_ts", "next_funding_ts"}
# The value columns digested, in order (as ``perpflow.store.schema.OBSERVED`` at this revision).
OBSERVED = {
    "tickers": (
        "ts_source",
        "bid",
        "ask",
        "last",
        "mark_price",
        "index_price",
        "base_volume",
        "quote_volume",
        "contract_volume",
    ),
    "funding_rates": (
        "ts_source",
        "funding_rate",
        "funding_ts",
        "next_funding_rate",
        "next_funding_ts",
        "mark_price",
        "index_price",
        "interval_hours",
    ),
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def obs_key(table: str, values: tuple) -> int:
    """The ``obs_key`` of ``values`` (``OBSERVED[table]`` order): the signed big-endian head (8
    bytes) of SHA-256 over ``ts_source`` (UTF-8), 0x1F, then each other value as a little-endian
    double: a number as given (-0.0 as 0.0), a time as microseconds since the epoch (UTC), a
    missing value as NaN."""
    numbers = []
    for name, value in zip(OBSERVED[table][1:], values[1:], strict=True):
        if value is None:
            numbers.append(math.nan)
        elif name in TIMES:
            numbers.append(float((_aware(value) - _EPOCH) // timedelta(microseconds=1)))
        else:
            numbers.append(value + 0.0)
    data = (values[0] or "").encode() + b"\x1f" + struct.pack(f"<{len(numbers)}d", *numbers)
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big", signed=True)


def _view(table: str, *extra: str) -> sa.TableClause:
    """A typed view of ``table``'s key and value columns (times read back as datetimes)."""
    columns = [sa.column("instrument_key", sa.BigInteger), sa.column("ts", sa.DateTime())]
    columns += [
        sa.column(name, sa.DateTime() if name in TIMES else sa.String if i == 0 else sa.Float)
        for i, name in enumerate(OBSERVED[table])
    ]
    return sa.table(table, *columns, *(sa.column(name) for name in extra))


def _fill(table: str) -> None:
    """Give every row of ``table`` its ``obs_key``, a page of rows at a time, in key order
    (PostgreSQL: ``(instrument_key, ts)``, unique before the key changes; SQLite: ``rowid``)."""
    conn = op.get_bind()
    postgresql = conn.dialect.name == "postgresql"
    view = _view(table) if postgresql else _view(table, "rowid")
    values = [view.c[name] for name in OBSERVED[table]]
    if postgresql:
        order = [view.c.instrument_key, view.c.ts]
        update = sa.text(
            f"UPDATE {table} AS t SET obs_key = v.obs_key FROM unnest("
            "CAST(:keys AS bigint[]), CAST(:times AS timestamptz[]), CAST(:digests AS bigint[])"
            ") AS v(instrument_key, ts, obs_key) "
            "WHERE t.instrument_key = v.instrument_key AND t.ts = v.ts"
        )
    else:
        order = [view.c.rowid]
        update = sa.text(f"UPDATE {table} SET obs_key = :digest WHERE rowid = :rowid")
    after: tuple | None = None
    while True:
        query = sa.select(*order, *values).order_by(*order).limit(PAGE)
        if after is not None:
            query = query.where(sa.tuple_(*order) > sa.tuple_(*after))
        rows = conn.execute(query).all()
        if not rows:
            return
        width = len(order)
        digests = [obs_key(table, tuple(_aware_row(row[width:]))) for row in rows]
        if postgresql:
            conn.execute(
                update,
                {
                    "keys": [row[0] for row in rows],
                    "times": [_aware(row[1]) for row in rows],
                    "digests": digests,
                },
            )
        else:
            pairs = zip(digests, rows, strict=True)
            conn.execute(update, [{"digest": d, "rowid": row[0]} for d, row in pairs])
        after = tuple(rows[-1][:width])


def _aware_row(values) -> list:
    return [_aware(v) if isinstance(v, datetime) else v for v in values]


def _rebuild_sqlite(table: str, key: list[str], drop: tuple[str, ...] = ()) -> None:
    """SQLite cannot change a primary key: the table is made anew without the ``drop`` columns,
    with the key columns NOT NULL and primary key ``key``, and refilled."""
    columns = [c for c in sa.inspect(op.get_bind()).get_columns(table) if c["name"] not in drop]
    names = ", ".join(f'"{c["name"]}"' for c in columns)
    op.rename_table(table, f"{table}_old")
    op.create_table(
        table,
        *(
            sa.Column(c["name"], c["type"], nullable=c["nullable"] and c["name"] not in key)
            for c in columns
        ),
        sa.PrimaryKeyConstraint(*key, name=f"{table}_pkey"),
    )
    op.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {table}_old")
    op.drop_table(f"{table}_old")


def _set_key(table: str, key: list[str], drop: tuple[str, ...] = ()) -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(table, key, drop)
        return
    op.drop_constraint(f"{table}_pkey", table, type_="primary")
    op.create_primary_key(f"{table}_pkey", table, key)
    for column in drop:
        op.drop_column(table, column)


def _restore_displaced(table: str) -> None:
    """Put back the rows a downgrade set aside (their days' partitions made first on
    PostgreSQL); an identical observation already stored is skipped."""
    conn = op.get_bind()
    displaced = f"{table}_displaced"
    if not sa.inspect(conn).has_table(displaced):
        return
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text(
                "SELECT perpflow_ensure_partition(:table, d) FROM (SELECT DISTINCT "
                f"CAST(timezone('UTC', ts) AS date) AS d FROM {displaced}) AS days"
            ),
            {"table": table},
        )
    names = ", ".join(f'"{c["name"]}"' for c in sa.inspect(conn).get_columns(displaced))
    op.execute(
        f"INSERT INTO {table} ({names}) SELECT {names} FROM {displaced} WHERE true "
        "ON CONFLICT DO NOTHING"
    )
    op.drop_table(displaced)


def upgrade() -> None:
    op.add_column("tickers", sa.Column("contract_volume", sa.Float, nullable=True))
    for table in OBSERVED:
        op.add_column(table, sa.Column("obs_key", sa.BigInteger, nullable=True))
        _fill(table)
        if op.get_bind().dialect.name == "postgresql":
            op.alter_column(table, "obs_key", nullable=False)
        _set_key(table, ["instrument_key", "ts", "obs_key"])
        _restore_displaced(table)


def _displace(table: str) -> None:
    """Move every row but the newest ``collected_at`` (then the larger ``obs_key``) of each
    ``(instrument_key, ts)`` into ``<table>_displaced``; drop that table when nothing moved."""
    conn = op.get_bind()
    displaced = f"{table}_displaced"
    columns = sa.inspect(conn).get_columns(table)
    op.create_table(displaced, *(sa.Column(c["name"], c["type"]) for c in columns))
    names = ", ".join(f'"{c["name"]}"' for c in columns)
    ranked = (
        f"SELECT {names}, row_number() OVER (PARTITION BY instrument_key, ts "
        f"ORDER BY collected_at DESC, obs_key DESC) AS newest FROM {table}"
    )
    moved = conn.execute(
        sa.text(
            f"INSERT INTO {displaced} ({names}) SELECT {names} FROM ({ranked}) AS r "
            "WHERE newest > 1"
        )
    ).rowcount
    if not moved:
        op.drop_table(displaced)
        return
    op.execute(
        f"DELETE FROM {table} WHERE EXISTS (SELECT 1 FROM {displaced} AS d WHERE "
        f"d.instrument_key = {table}.instrument_key AND d.ts = {table}.ts "
        f"AND d.obs_key = {table}.obs_key)"
    )


def downgrade() -> None:
    for table in OBSERVED:
        _displace(table)
        drop = ("obs_key", "contract_volume") if table == "tickers" else ("obs_key",)
        _set_key(table, ["instrument_key", "ts"], drop)
