"""Ingest throughput: the store's idempotent path against raw baselines measured in the same run.

PostgreSQL: ``perpflow.store.write_new`` (one transaction per batch, on one connection; the
idempotent insert alone) and ``store_batch`` (all a collection step writes per batch: partition
check, pool checkout, the ledger row in the same transaction) against raw asyncpg ``COPY`` of the rows' own columns into an unconstrained
table, a plain COPY into the keyed table itself (not idempotent: the ceiling its primary key
leaves), ``insert_new`` inside a caller's transaction, a plain SQLAlchemy executemany ``INSERT``,
and the other idempotent ways that were tried (COPY into a temporary staging table, then ``INSERT
... SELECT ... ON CONFLICT DO NOTHING``; with the staging table made per batch or once per
connection). SQLite: ``write_new`` against raw ``sqlite3`` executemany into an unconstrained
table. Every figure is rows per second; ratios are against the raw baseline.
Also the row-level validation cost of the collection path (``perpflow.normalize``).
"""

from __future__ import annotations

import itertools
import sqlite3
import statistics
import tempfile
import time
from operator import itemgetter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import Table, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from perpflow.bench.figures import HIGHER, LOWER, Clock, Figure, compared, server_version
from perpflow.normalize import Batch, funding_rate_rows, ticker_rows
from perpflow.store import (
    LedgerEntry,
    create_engine,
    init_schema,
    insert_new,
    store_batch,
    tickers,
    write_new,
)
from perpflow.store.partitions import ensure_row_partitions
from perpflow.store.engine import SQLITE_PRAGMAS
from perpflow.store.writes import _stage_insert, copy_into, copy_records, given_columns, keyed_rows

BATCH_ROWS = 500
RAW_TABLE = "bench_raw_tickers"
T0 = datetime(2026, 1, 1, tzinfo=UTC)

Writer = Callable[[AsyncConnection, Table, list[dict[str, Any]]], Awaitable[int]]


def ticker_dicts(count: int, symbols: int = 300, start: int = 0) -> list[dict[str, Any]]:
    """``count`` distinct ticker rows as ``normalize.ticker_rows`` makes them (exchange
    ``bench``, ``symbols`` symbols, one row per symbol and second from 2026-01-01 UTC)."""
    rows = []
    for i in range(start, start + count):
        price = 100.0 + (i % 997) / 10
        rows.append(
            {
                "exchange": "bench",
                "symbol": f"S{i % symbols:04d}/USDT:USDT",
                "ts": T0 + timedelta(seconds=i // symbols),
                "ts_source": "exchange",
                "bid": price,
                "ask": price + 0.1,
                "last": price + 0.05,
                "mark_price": price + 0.04,
                "index_price": price + 0.03,
                "base_volume": 1000.0 + i,
                "quote_volume": 1e5 + i,
                "contract_volume": None,
                "collected_at": T0,
                "run_id": "bench",
            }
        )
    return rows


def batches(rows: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    """``rows`` cut into lists of ``size`` (the last one may be shorter)."""
    return [rows[i : i + size] for i in range(0, len(rows), size)]


# -- the idempotent ways tried on PostgreSQL besides the store's own ---------------------------


def _names(table: Table) -> str:
    return ", ".join(f'"{c.name}"' for c in table.columns)


async def copy_stage_reused(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> int:
    """COPY into a temporary staging table made once per connection and emptied by ``ON COMMIT
    DELETE ROWS`` (one batch per transaction), then ``INSERT ... SELECT ... ON CONFLICT DO
    NOTHING``: the staging path without its per-batch ``CREATE ... IF NOT EXISTS`` and
    ``TRUNCATE``."""
    stage = f"stage_reused_{table.name}"
    made = (await conn.get_raw_connection()).info.setdefault("perpflow_bench_stages", set())
    await conn.execute(
        text(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table.name} INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"
            if stage not in made
            else "SELECT 1"  # opens the transaction
        )
    )
    made.add(stage)
    await copy_into(conn, stage, *copy_records(table, rows))
    result = await conn.execute(
        text(
            f"INSERT INTO {table.name} ({_names(table)}) SELECT {_names(table)} FROM {stage} "
            "ON CONFLICT DO NOTHING"
        )
    )
    return result.rowcount


def _unnest_sql(table: Table) -> str:
    arrays = ", ".join(
        f"${i}::{c.type.compile(postgresql.dialect())}[]" for i, c in enumerate(table.columns, 1)
    )
    return (
        f"INSERT INTO {table.name} ({_names(table)}) SELECT * FROM unnest({arrays}) "
        "ON CONFLICT DO NOTHING"
    )


async def unnest_on_conflict(
    conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]
) -> int:
    """One prepared statement per batch: ``INSERT ... SELECT * FROM unnest($1::text[], ...) ON
    CONFLICT DO NOTHING`` with one array per column (one round trip, no staging table)."""
    keyed = keyed_rows(table, rows)
    params = tuple([row.get(c.name) for row in keyed] for c in table.columns)
    return (await conn.exec_driver_sql(_unnest_sql(table), params)).rowcount


async def copy_keyed(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> int:
    """A plain COPY into the keyed table itself, not idempotent (a stored key fails the batch): what
    the table's primary key, indexes and partition routing cost on their own, the ceiling of
    every idempotent way into that table."""
    await copy_into(conn, table.name, *copy_records(table, rows))
    return len(rows)


async def sqlalchemy_executemany(
    conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]
) -> int:
    """A plain (not idempotent) SQLAlchemy executemany ``INSERT``: the ORM-less baseline."""
    await conn.execute(table.insert(), keyed_rows(table, rows))
    return len(rows)


IDEMPOTENT_ALTERNATIVES: dict[str, Writer] = {
    "copy_stage": _stage_insert,  # the store's fallback when a batch holds stored keys
    "copy_stage_reused": copy_stage_reused,
    "unnest_on_conflict": unnest_on_conflict,
}


# -- runners -----------------------------------------------------------------------------------


async def _truncate(engine: AsyncEngine, *tables: str) -> None:
    async with engine.begin() as conn:
        for name in tables:
            await conn.execute(
                text(
                    f"DELETE FROM {name}" if engine.dialect.name == "sqlite" else f"TRUNCATE {name}"
                )
            )


async def store_new(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> int:
    """The store's idempotent bulk path: ``perpflow.store.write_new`` (its own transaction)."""
    return (await write_new(conn, table, rows))[0]


def as_collected(engine: AsyncEngine) -> Writer:
    """What a collection step does per batch: ``perpflow.store.store_batch`` (the day's partitions
    checked, a connection from the pool, ``write_new`` with the ledger row in its transaction)."""
    started, numbers = datetime.now(UTC), itertools.count()

    async def store_batch_(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> int:
        run_id = f"bench-{next(numbers)}"  # one ledger row per batch, as one per venue step
        entry = LedgerEntry(run_id, "bench", table.name, "ok", started, started)
        batch = Batch("bench", table.name, requested=len(rows), rows=rows)
        return (await store_batch(engine, table, batch, entry)).stored

    return store_batch_


def in_transaction(writer: Writer) -> Writer:
    """``writer`` run inside a transaction of its own."""

    async def write(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> int:
        async with conn.begin():
            return await writer(conn, table, rows)

    write.__name__ = writer.__name__
    return write


async def _through(
    engine: AsyncEngine, writer: Writer, chunks: list[list[dict[str, Any]]], *, again: bool = False
) -> float:
    """Seconds to write ``chunks`` with ``writer`` (one transaction each, on one connection) into
    an emptied ``tickers`` (``again``: into the table as it is, expecting every row to be a
    duplicate). Raises ``RuntimeError`` when the count of new rows is not what it must be."""
    if not again:
        await _truncate(engine, tickers.name)
    clock = Clock()
    async with engine.connect() as conn:
        for chunk in chunks:
            with clock:
                stored = await writer(conn, tickers, chunk)
            if stored != (0 if again else len(chunk)):
                raise RuntimeError(
                    f"{writer.__name__}: {stored} new rows of {len(chunk)} "
                    f"({'all stored before' if again else 'none stored before'})"
                )
    return clock.seconds


async def _raw_copy(dsn: str, chunks: list[list[dict[str, Any]]]) -> float:
    """Seconds to COPY the rows' own columns (``given_columns``: no derived keys), converted as
    the store converts them, into an unconstrained table."""
    columns = given_columns(tickers)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {RAW_TABLE}")
        await conn.execute(f"CREATE TABLE {RAW_TABLE} (LIKE {tickers.name})")
        await conn.execute(
            f"ALTER TABLE {RAW_TABLE} DROP COLUMN instrument_key, DROP COLUMN obs_key"
        )
        clock = Clock()
        for chunk in chunks:
            with clock:
                records = list(map(itemgetter(*columns), chunk))
                await conn.copy_records_to_table(RAW_TABLE, records=records, columns=columns)
        await conn.execute(f"DROP TABLE {RAW_TABLE}")
    finally:
        await conn.close()
    return clock.seconds


def _asyncpg_dsn(engine: AsyncEngine) -> str:
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


async def postgresql_ingest(
    engine: AsyncEngine, rows: int, batch_rows: int = BATCH_ROWS, rounds: int = 5
) -> list[Figure]:
    """Rows/s of each way into the workload database's ``tickers`` (emptied before each way) for
    ``rows`` rows in ``batch_rows``-row transactions and in one bulk transaction; each way runs
    ``rounds`` times, in rotating order, and its median is kept (the machine may be busy).

    Figures ``ingest.postgresql.<way>.batch<N>`` and ``...bulk<rows>``; ways: ``raw_copy`` (the
    baseline), ``store`` (``write_new``), ``store_duplicates`` (``write_new`` sent the same rows
    again), ``store_batch`` (a collection step's whole write), ``store_in_transaction`` (``insert_new`` inside a caller's transaction: behind a
    savepoint), ``copy_keyed`` (the ceiling), ``sqlalchemy_executemany`` and the alternatives in
    ``IDEMPOTENT_ALTERNATIVES``.
    Raises ``RuntimeError`` if an idempotent way loses a row or counts a duplicate as new.
    """
    data = ticker_dicts(rows)
    version = await server_version(engine)
    dsn = _asyncpg_dsn(engine)
    await ensure_row_partitions(engine, tickers, data)  # the daily partitions the rows need

    async def store_duplicates(chunks: list[list[dict[str, Any]]]) -> float:
        await _through(engine, store_new, chunks)
        return await _through(engine, store_new, chunks, again=True)

    ways: dict[str, Callable[[list[list[dict[str, Any]]]], Awaitable[float]]] = {
        "raw_copy": lambda chunks: _raw_copy(dsn, chunks),
        "store": lambda chunks: _through(engine, store_new, chunks),
        "store_duplicates": store_duplicates,
        "store_batch": lambda chunks: _through(engine, as_collected(engine), chunks),
        "store_in_transaction": lambda chunks: _through(engine, in_transaction(insert_new), chunks),
        "copy_keyed": lambda chunks: _through(engine, in_transaction(copy_keyed), chunks),
        "sqlalchemy_executemany": lambda chunks: _through(
            engine, in_transaction(sqlalchemy_executemany), chunks
        ),
        **{
            way: (lambda chunks, w=writer: _through(engine, in_transaction(w), chunks))
            for way, writer in IDEMPOTENT_ALTERNATIVES.items()
        },
    }
    figures = []
    for label, chunks in (
        (f"batch{batch_rows}", batches(data, batch_rows)),
        (f"bulk{rows}", [data]),
    ):
        seconds: dict[str, list[float]] = {way: [] for way in ways}
        order = list(ways)
        for round_ in range(rounds):
            for way in order[round_ % len(order) :] + order[: round_ % len(order)]:
                seconds[way].append(await ways[way](chunks))
        rates = {
            way: Figure(
                f"ingest.postgresql.{way}.{label}",
                rows / statistics.median(spent),
                "rows/s",
                HIGHER,
                database=version,
                yardstick=way not in ("store", "store_duplicates", "store_batch", "store_in_transaction"),
            )
            for way, spent in seconds.items()
        }
        base = rates.pop("raw_copy")
        figures += [base, *(compared(figure, base) for figure in rates.values())]
    await _truncate(engine, tickers.name)
    return figures


def _sqlite3_executemany(path: Path, chunks: list[list[dict[str, Any]]]) -> float:
    columns = given_columns(tickers)
    conn = sqlite3.connect(path)
    try:
        for pragma in SQLITE_PRAGMAS:
            conn.execute(pragma)
        conn.execute(f"CREATE TABLE {RAW_TABLE} ({', '.join(columns)})")
        insert = f"INSERT INTO {RAW_TABLE} VALUES ({', '.join('?' * len(columns))})"
        clock = Clock()
        for chunk in chunks:
            with clock:
                conn.executemany(
                    insert, [tuple(_sqlite_value(r[c]) for c in columns) for r in chunk]
                )
                conn.commit()
    finally:
        conn.close()
    return clock.seconds


def _sqlite_value(value: Any) -> Any:
    # The text form SQLAlchemy stores for a UTC datetime on SQLite.
    return value.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(value, datetime) else value


async def sqlite_ingest(rows: int, batch_rows: int = BATCH_ROWS) -> list[Figure]:
    """Rows/s of ``write_new`` (``INSERT ... ON CONFLICT DO NOTHING``) on a fresh SQLite file against raw
    ``sqlite3`` executemany into an unconstrained table (same pragmas), batches and bulk.
    Figures ``ingest.sqlite.{store,raw_executemany}.{batch<N>,bulk<rows>}``."""
    data = ticker_dicts(rows)
    figures = []
    with tempfile.TemporaryDirectory(prefix="perpflow-bench-") as tmp:
        engine = create_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'store.sqlite'}")
        try:
            await init_schema(engine)
            version = await server_version(engine)
            for label, chunks in (
                (f"batch{batch_rows}", batches(data, batch_rows)),
                (f"bulk{rows}", [data]),
            ):
                raw_path = Path(tmp) / f"raw-{label}.sqlite"
                base = Figure(
                    f"ingest.sqlite.raw_executemany.{label}",
                    rows / _sqlite3_executemany(raw_path, chunks),
                    "rows/s",
                    HIGHER,
                    database=version,
                    yardstick=True,
                )
                store = Figure(
                    f"ingest.sqlite.store.{label}",
                    rows / await _through(engine, store_new, chunks),
                    "rows/s",
                    HIGHER,
                    database=version,
                )
                figures += [base, compared(store, base)]
        finally:
            await engine.dispose()
    return figures


# -- validation --------------------------------------------------------------------------------


def _ccxt_tickers(count: int) -> tuple[dict[str, dict[str, Any]], list[str]]:
    now = int(T0.timestamp() * 1000)
    data = {}
    for i in range(count):
        symbol = f"S{i:04d}/USDT:USDT"
        price = 100.0 + i / 10
        data[symbol] = {
            "symbol": symbol,
            "timestamp": now,
            "bid": price,
            "ask": price + 0.1,
            "last": price + 0.05,
            "markPrice": price,
            "indexPrice": price,
            "baseVolume": 10.0,
            "quoteVolume": 1000.0,
            "fundingRate": 1e-4,
            "fundingTimestamp": now,
            "nextFundingTimestamp": now + 28_800_000,
            "interval": "8h",
        }
    return data, list(data)


def validation_cost(batch_rows: int = BATCH_ROWS, repeats: int = 50) -> list[Figure]:
    """Median cost of normalizing and validating one ``batch_rows``-row batch of ccxt tickers
    (``ticker_rows``) and funding rates (``funding_rate_rows``), in µs per batch and per row."""
    data, symbols = _ccxt_tickers(batch_rows)
    now = int(T0.timestamp() * 1000)
    steps = {
        "tickers": lambda: ticker_rows("bench", data, symbols, now, "bench"),
        "funding_rates": lambda: funding_rate_rows("bench", data, symbols, now, "bench", 0.05),
    }
    figures = []
    for dataset, step in steps.items():
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            batch = step()
            samples.append(time.perf_counter() - started)
            if len(batch.rows) != batch_rows:
                raise RuntimeError(f"validation {dataset}: {len(batch.quarantine)} rows refused")
        per_batch = statistics.median(samples) * 1e6
        figures += [
            Figure(f"validation.{dataset}.batch{batch_rows}", per_batch, "us", LOWER),
            Figure(f"validation.{dataset}.per_row", per_batch / batch_rows, "us", LOWER),
        ]
    return figures
