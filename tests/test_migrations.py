"""Alembic: an empty database and a foundation-era database (revision 0001's tables without
``alembic_version``, as ``create_all`` made them, with rows) both reach head, the result matches
``schema.py``, and a second upgrade changes nothing."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import column, func, insert, inspect, select, table, text

from perpflow.normalize import funding_rate_rows, ms_to_datetime, ticker_rows
from perpflow.store import (
    LedgerEntry,
    collection_ledger,
    create_engine,
    funding_rates,
    init_schema,
    instrument_key,
    metadata,
    quarantine,
    store_batch,
    tickers,
)
from perpflow.store.partitions import ensure_row_partitions
from perpflow.store.schema import OBSERVED, observation_key
from perpflow.store.migrate import FOUNDATION_REVISION, alembic_config, current_revisions, head_revisions
from perpflow.store.partitions import partition_day

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


def _keys(connection) -> dict[str, list[str]]:
    # compare_metadata does not compare primary keys: they are read here.
    found = inspect(connection)
    return {t: found.get_pk_constraint(t)["constrained_columns"] for t in ("tickers", "funding_rates")}


async def _state(engine):
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: (current_revisions(c), _schema_diff(c), _keys(c)))


OBSERVATION_KEY = ["instrument_key", "ts", "obs_key"]
HEAD_STATE = (head_revisions(), [], {"tickers": OBSERVATION_KEY, "funding_rates": OBSERVATION_KEY})
# Columns later revisions added to the foundation's tables (0006: instrument_key; 0007: the
# ledger's failed, failed_symbols, attempts; 0008: obs_key, contract_volume; 0010: quarantine's
# digest, the ledger's batch_id).
LATER_COLUMNS = {"instrument_key", "failed", "failed_symbols", "attempts", "obs_key",
                 "contract_volume", "digest", "batch_id"}


def _foundation_tables(connection) -> None:
    """Revision 0001's tables and no ``alembic_version``: what ``create_all`` made before
    migrations existed."""
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, FOUNDATION_REVISION)
    connection.execute(text("DROP TABLE alembic_version"))


async def test_empty_database_upgrades_to_head_matching_the_schema(blank_database_url):
    engine = create_engine(blank_database_url)
    try:
        await init_schema(engine)
        assert await _state(engine) == HEAD_STATE
        await init_schema(engine)  # idempotent: already at head
        assert await _state(engine) == HEAD_STATE
    finally:
        await engine.dispose()


def _entry(run_id, dataset):
    return LedgerEntry(run_id, "venue", dataset, "ok", ms_to_datetime(NOW), ms_to_datetime(NOW))


async def _dump(engine):
    """Every row of the foundation's tables, in the foundation's columns."""
    async with engine.connect() as conn:
        return {
            table.name: sorted(
                map(tuple, (await conn.execute(select(*_foundation_columns(table)))).all()), key=repr
            )
            for table in (tickers, funding_rates, quarantine, collection_ledger)
        }


def _foundation_columns(table_):
    return [c for c in table_.c if c.name not in LATER_COLUMNS]


def _foundation_insert(table_, rows):
    """An INSERT of ``rows``' foundation columns only (not the ``LATER_COLUMNS``), with the
    schema's types (UTC datetimes bound as the store binds them)."""
    names = [name for name in rows[0] if name not in LATER_COLUMNS]
    return insert(table(table_.name, *(column(name, table_.c[name].type) for name in names)))


async def test_foundation_database_with_rows_upgrades_in_place(blank_database_url):
    engine = create_engine(blank_database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_foundation_tables)
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
                await conn.execute(_foundation_insert(tickers, batch.rows), batch.rows)
                await conn.execute(_foundation_insert(quarantine, batch.quarantine),
                                   batch.quarantine)
                rates = {
                    s: {"symbol": s, "timestamp": at, "fundingRate": 1e-4 * i, "interval": "8h"}
                    for i, s in enumerate(symbols)
                }
                rows = funding_rate_rows("venue", rates, symbols, at, f"f{day}", 0.05).rows
                await conn.execute(_foundation_insert(funding_rates, rows), rows)
        before = await _dump(engine)
        assert len(before["tickers"]) == 3 * 29 and len(before["funding_rates"]) == 3 * 30

        await init_schema(engine)

        assert await _dump(engine) == before
        async with engine.connect() as conn:  # every row got its instrument's key
            for keyed in (tickers, funding_rates):
                columns = (keyed.c.exchange, keyed.c.symbol, keyed.c.instrument_key)
                pairs = (await conn.execute(select(*columns))).all()
                assert pairs and all(key == instrument_key(e, s) for e, s, key in pairs)
        assert await _state(engine) == HEAD_STATE
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


def _to(revision: str, direction):
    def run(connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        direction(config, revision)

    return run


async def test_instrument_key_revision_downgrades_and_upgrades_without_losing_rows(blank_database_url):
    engine = create_engine(blank_database_url)
    try:
        await init_schema(engine)
        symbols = [f"S{i}/USDT:USDT" for i in range(20)]
        data = {s: {"symbol": s, "timestamp": NOW, "bid": 1.0, "ask": 2.0, "last": 1.5} for s in symbols}
        await store_batch(engine, tickers, ticker_rows("venue", data, symbols, NOW, "r1"), _entry("r1", "tickers"))
        before = await _dump(engine)
        async with engine.begin() as conn:
            await conn.run_sync(_to("0005", command.downgrade))
        async with engine.connect() as conn:
            keys = await conn.run_sync(_keys)
            columns = await conn.run_sync(lambda c: [col["name"] for col in inspect(c).get_columns("tickers")])
        assert keys == {"tickers": ["exchange", "symbol", "ts"], "funding_rates": ["exchange", "symbol", "ts"]}
        assert "instrument_key" not in columns
        assert await _dump(engine) == before
        await init_schema(engine)  # back to head: keys recomputed from exchange and symbol
        assert await _state(engine) == HEAD_STATE
        assert await _dump(engine) == before
    finally:
        await engine.dispose()


async def test_ledger_revision_counts_what_earlier_failed_steps_meant_to_fetch(blank_database_url):
    engine = create_engine(blank_database_url)
    try:
        await init_schema(engine)
        async with engine.begin() as conn:
            await conn.run_sync(_to("0006", command.downgrade))
            columns = ("run_id", "exchange", "dataset", "requested", "received", "stored",
                       "duplicates", "quarantined", "status", "started_at", "finished_at")
            at = ms_to_datetime(NOW)
            values = [("r1", "okx", "tickers", 7, 0, 0, 0, 0, "failed", at, at),
                      ("r1", "bybit", "tickers", 5, 5, 4, 1, 0, "ok", at, at)]
            statement = _foundation_insert(collection_ledger, [dict(zip(columns, values[0]))])
            await conn.execute(statement, [dict(zip(columns, v)) for v in values])
        await init_schema(engine)
        async with engine.connect() as conn:
            rows = (await conn.execute(
                select(collection_ledger.c.exchange, collection_ledger.c.failed,
                       collection_ledger.c.attempts, collection_ledger.c.failed_symbols)
            )).all()
        assert sorted(map(tuple, rows)) == [("bybit", 0, 1, None), ("okx", 7, 1, None)]
    finally:
        await engine.dispose()


def _observations(at_ms: int, symbols: list[str], mark: float, run_id: str):
    """Ticker and funding-rate rows of ``symbols`` at the venue time ``NOW`` (a last-trade time),
    received at ``at_ms``, with mark price ``mark`` and a few missing values."""
    tickers_ = {
        s: {"symbol": s, "timestamp": NOW, "bid": 1.0 + i, "ask": 2.0 + i, "markPrice": mark,
            "baseVolume": None if i % 2 else 10.0 * i}
        for i, s in enumerate(symbols)
    }
    rates = {
        s: {"symbol": s, "timestamp": NOW, "fundingRate": -0.0 if i == 0 else 1e-4 * i,
            "fundingTimestamp": NOW + 3_600_000, "markPrice": mark, "interval": "8h"}
        for i, s in enumerate(symbols)
    }
    return (
        ticker_rows("venue", tickers_, symbols, at_ms, run_id),
        funding_rate_rows("venue", rates, symbols, at_ms, run_id, 0.05),
    )


def _revision_0006_insert(table_, rows):
    """An INSERT of ``rows``' columns as revision 0006 has them (with ``instrument_key``)."""
    names = [name for name in rows[0] if name not in LATER_COLUMNS - {"instrument_key"}]
    return insert(table(table_.name, *(column(name, table_.c[name].type) for name in names)))


def _all_rows(engine):
    async def read():
        async with engine.connect() as conn:
            return {
                t.name: sorted(map(tuple, (await conn.execute(select(t))).all()), key=repr)
                for t in (tickers, funding_rates)
            }

    return read()


async def test_observation_identity_revision_gives_old_rows_the_store_digest(blank_database_url):
    """Rows stored at 0006 keep every value through 0008 and get the digest the store computes:
    re-polling the same observation afterwards is a duplicate, a changed one is stored."""
    engine = create_engine(blank_database_url)
    symbols = [f"S{i}/USDT:USDT" for i in range(12)]
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_to("0006", command.upgrade))
        old = _observations(NOW, symbols, 100.0, "r0")
        for batch, table_ in zip(old, (tickers, funding_rates), strict=True):
            await ensure_row_partitions(engine, table_, batch.rows)  # days of a partitioned table
            keyed = [
                {k: v for k, v in row.items() if k != "contract_volume"}
                | {"instrument_key": instrument_key(row["exchange"], row["symbol"])}
                for row in batch.rows
            ]
            async with engine.begin() as conn:
                await conn.execute(_revision_0006_insert(table_, keyed), keyed)
        before = await _dump(engine)
        assert len(before["tickers"]) == len(before["funding_rates"]) == len(symbols)

        await init_schema(engine)

        assert await _state(engine) == HEAD_STATE
        assert await _dump(engine) == before
        async with engine.connect() as conn:
            for table_ in (tickers, funding_rates):
                rows = (await conn.execute(select(table_))).all()
                assert len(rows) == len(symbols)
                for row in rows:
                    values = tuple(getattr(row, name) for name in OBSERVED[table_.name])
                    assert row.obs_key == observation_key(table_.name, values)
        again = _observations(NOW + 60_000, symbols, 100.0, "r1")
        changed = _observations(NOW + 120_000, symbols, 101.0, "r2")
        for batch, table_ in zip(again, (tickers, funding_rates), strict=True):
            result = await store_batch(engine, table_, batch, _entry("r1", table_.name))
            assert (result.stored, result.duplicates) == (0, len(symbols))
        for batch, table_ in zip(changed, (tickers, funding_rates), strict=True):
            result = await store_batch(engine, table_, batch, _entry("r2", table_.name))
            assert (result.stored, result.duplicates) == (len(symbols), 0)
    finally:
        await engine.dispose()


async def test_observation_identity_revision_downgrades_and_upgrades_without_losing_rows(
    blank_database_url,
):
    """Two observations at one (instrument_key, ts): downgrade keeps the newest collected_at in
    the table and sets the other aside; upgrading again brings every row back as it was."""
    engine = create_engine(blank_database_url)
    symbols = [f"S{i}/USDT:USDT" for i in range(6)]
    try:
        await init_schema(engine)
        first = _observations(NOW, symbols, 100.0, "r1")
        second = _observations(NOW + 60_000, symbols, 101.0, "r2")
        for batch, table_ in zip([*first, *second], (tickers, funding_rates) * 2, strict=True):
            await store_batch(engine, table_, batch, _entry(batch.rows[0]["run_id"], table_.name))
        before = await _all_rows(engine)
        assert len(before["tickers"]) == len(before["funding_rates"]) == 2 * len(symbols)

        async with engine.begin() as conn:
            await conn.run_sync(_to("0006", command.downgrade))
        async with engine.connect() as conn:
            assert await conn.run_sync(_keys) == {
                "tickers": ["instrument_key", "ts"],
                "funding_rates": ["instrument_key", "ts"],
            }
            for name in ("tickers", "funding_rates"):
                kept = (await conn.execute(text(f"SELECT run_id, mark_price FROM {name}"))).all()
                assert sorted(kept) == [("r2", 101.0)] * len(symbols)  # the newest collected_at
                aside = (
                    await conn.execute(text(f"SELECT run_id, mark_price FROM {name}_displaced"))
                ).all()
                assert sorted(aside) == [("r1", 100.0)] * len(symbols)

        await init_schema(engine)

        assert await _state(engine) == HEAD_STATE
        assert await _all_rows(engine) == before
        async with engine.connect() as conn:
            names = await conn.run_sync(lambda c: inspect(c).get_table_names())
        assert not [name for name in names if name.endswith("_displaced")]
    finally:
        await engine.dispose()
