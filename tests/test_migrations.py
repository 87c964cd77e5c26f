"""Alembic: an empty database and a foundation-era database (made by ``create_all``, with rows)
both reach head, the result matches ``schema.py``, and a second upgrade changes nothing."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, select

from perpflow.normalize import funding_rate_rows, ms_to_datetime, ticker_rows
from perpflow.store import (
    LedgerEntry,
    collection_ledger,
    create_engine,
    funding_rates,
    init_schema,
    insert_new,
    metadata,
    quarantine,
    store_batch,
    tickers,
)
from perpflow.store.migrate import current_revisions, head_revisions
from perpflow.store.partitions import partition_day

FOUNDATION_TABLES = (
    "instruments",
    "tickers",
    "funding_rates",
    "funding_history",
    "quarantine",
    "collection_ledger",
)
DAY_MS = 86_400_000
NOW = 1_763_900_000_000


def _schema_diff(connection) -> list:
    """Differences between the migrated database and ``schema.py`` (daily partitions and the
    indexes only PostgreSQL's layout has are the migrations' own, not the metadata's)."""

    def include(name, type_, parent_names) -> bool:
        return not (type_ == "table" and partition_day(name)) and not (
            type_ == "index" and name.endswith("_brin")
        )

    context = MigrationContext.configure(connection, opts={"include_name": include})
    return compare_metadata(context, metadata)


async def _state(engine):
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: (current_revisions(c), _schema_diff(c)))


async def test_empty_database_upgrades_to_head_matching_the_schema(blank_database_url):
    engine = create_engine(blank_database_url)
    try:
        await init_schema(engine)
        assert await _state(engine) == (head_revisions(), [])
        await init_schema(engine)  # idempotent: already at head
        assert await _state(engine) == (head_revisions(), [])
    finally:
        await engine.dispose()


def _entry(run_id, dataset):
    return LedgerEntry(run_id, "venue", dataset, "ok", ms_to_datetime(NOW), ms_to_datetime(NOW))


async def _dump(engine):
    async with engine.connect() as conn:
        return {
            table.name: sorted(map(tuple, (await conn.execute(select(table))).all()), key=repr)
            for table in (tickers, funding_rates, quarantine, collection_ledger)
        }


async def test_foundation_database_with_rows_upgrades_in_place(blank_database_url):
    engine = create_engine(blank_database_url)
    try:
        async with engine.begin() as conn:  # the foundation's way: create_all, no alembic_version
            await conn.run_sync(
                metadata.create_all, tables=[metadata.tables[name] for name in FOUNDATION_TABLES]
            )
            symbols = [f"S{i}/USDT:USDT" for i in range(30)]
            for day in range(3):  # three days of rows, one quarantined per batch
                at = NOW - day * DAY_MS
                data = {
                    s: {
                        "symbol": s,
                        "timestamp": at,
                        "bid": 1.0 + i,
                        "ask": 2.0 + i,
                        "last": 1.5 + i,
                    }
                    for i, s in enumerate(symbols)
                }
                data[symbols[0]]["last"] = -1.0
                batch = ticker_rows("venue", data, symbols, at, f"r{day}")
                await insert_new(conn, tickers, batch.rows)
                await conn.execute(quarantine.insert(), batch.quarantine)
                rates = {
                    s: {"symbol": s, "timestamp": at, "fundingRate": 1e-4 * i, "interval": "8h"}
                    for i, s in enumerate(symbols)
                }
                await insert_new(
                    conn,
                    funding_rates,
                    funding_rate_rows("venue", rates, symbols, at, f"f{day}", 0.05).rows,
                )
        before = await _dump(engine)
        assert len(before["tickers"]) == 3 * 29 and len(before["funding_rates"]) == 3 * 30

        await init_schema(engine)

        assert await _dump(engine) == before
        assert await _state(engine) == (head_revisions(), [])
        # Writes go on after the upgrade, for a day never seen before too.
        later = NOW + 5 * DAY_MS
        fresh = {
            s: {"symbol": s, "timestamp": later, "bid": 1.0, "ask": 2.0, "last": 1.5}
            for s in symbols
        }
        result = await store_batch(
            engine,
            tickers,
            ticker_rows("venue", fresh, symbols, later, "r9"),
            _entry("r9", "tickers"),
        )
        assert result.stored == len(symbols)
        async with engine.connect() as conn:
            count = (await conn.execute(select(func.count()).select_from(tickers))).scalar_one()
        assert count == 3 * 29 + len(symbols)
    finally:
        await engine.dispose()
