"""Idempotent writes on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sqlalchemy import func, select

from perpflow.normalize import funding_history_rows, instrument_rows, ms_to_datetime, ticker_rows
from perpflow.store import (
    LedgerEntry,
    collection_ledger,
    funding_history,
    funding_watermarks,
    instrument_key,
    insert_new,
    instruments,
    quarantine,
    set_funding_intervals,
    store_batch,
    tickers,
    upsert_instruments,
)
from perpflow.store.partitions import ensure_row_partitions
from perpflow.store.writes import copy_records, keyed_rows

NOW = 1_763_900_000_000
SYMBOLS = [f"C{i:03d}/USDT:USDT" for i in range(600)]


def _tickers():
    data = {s: {"symbol": s, "timestamp": NOW, "bid": 1.0 + i, "ask": 1.5 + i, "last": 1.2 + i}
            for i, s in enumerate(SYMBOLS)}
    data[SYMBOLS[7]]["last"] = -1.0
    return data


def _entry(run_id, dataset="tickers"):
    return LedgerEntry(run_id, "venue", dataset, "ok", ms_to_datetime(NOW), ms_to_datetime(NOW), 12.5)


async def _count(engine, table):
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table))).scalar_one()


async def test_same_batch_twice_stores_once_and_counts_duplicates(engine):
    first = await store_batch(engine, tickers, ticker_rows("venue", _tickers(), SYMBOLS, NOW, "r1"), _entry("r1"))
    second = await store_batch(engine, tickers, ticker_rows("venue", _tickers(), SYMBOLS, NOW, "r2"), _entry("r2"))
    assert (first.stored, first.duplicates, first.quarantined) == (599, 0, 1)
    assert (second.stored, second.duplicates, second.quarantined) == (0, 599, 1)
    assert await _count(engine, tickers) == 599
    assert await _count(engine, quarantine) == 2
    async with engine.connect() as conn:
        rows = (await conn.execute(select(collection_ledger).order_by(collection_ledger.c.run_id))).all()
        stored = (await conn.execute(select(tickers).where(tickers.c.symbol == SYMBOLS[3]))).one()
    assert [(r.run_id, r.requested, r.stored, r.duplicates, r.quarantined) for r in rows] == [
        ("r1", 600, 599, 0, 1),
        ("r2", 600, 0, 599, 1),
    ]
    assert stored.ts == ms_to_datetime(NOW) and stored.ts.utcoffset() == timedelta(0)
    assert (stored.bid, stored.ask, stored.last) == (4.0, 4.5, 4.2)


async def test_ledger_row_of_a_retried_store_is_replaced_not_repeated(engine):
    batch = ticker_rows("venue", _tickers(), SYMBOLS[:10], NOW, "r1")
    await store_batch(engine, tickers, batch, _entry("r1"))
    await store_batch(engine, tickers, batch, _entry("r1"))
    async with engine.connect() as conn:
        (row,) = (await conn.execute(select(collection_ledger))).all()
    assert (row.stored, row.duplicates, row.quarantined) == (0, 9, 1)


async def test_instruments_keep_first_seen_and_watermarks_follow_history(engine):
    markets = {s: {"id": s.replace("/", ""), "base": s[:4], "quote": "USDT", "settle": "USDT",
                   "linear": True, "contractSize": 1.0, "active": True} for s in SYMBOLS[:3]}
    await upsert_instruments(engine, instrument_rows("venue", markets, NOW))
    await upsert_instruments(engine, instrument_rows("venue", markets, NOW + 60_000))
    await set_funding_intervals(engine, "venue", {SYMBOLS[0]: 4.0})
    history = [{"symbol": SYMBOLS[0], "timestamp": NOW - k * 4 * 3_600_000, "fundingRate": 1e-4}
               for k in range(3)]
    batch = funding_history_rows("venue", SYMBOLS[0], history, 4.0, NOW, "r", 0.05)
    await store_batch(engine, funding_history, batch, _entry("r", "funding_history"))
    async with engine.connect() as conn:
        row = (await conn.execute(select(instruments).where(instruments.c.symbol == SYMBOLS[0]))).one()
    assert row.first_seen == ms_to_datetime(NOW) and row.last_seen == ms_to_datetime(NOW + 60_000)
    marks = await funding_watermarks(engine, "venue")
    assert marks[SYMBOLS[0]] == (ms_to_datetime(NOW), 4.0)
    assert marks[SYMBOLS[1]] == (None, None)


async def test_partly_stored_batch_counts_only_new_rows_and_keeps_earlier_work(engine):
    batch = ticker_rows("venue", _tickers(), SYMBOLS, NOW, "r1")
    await store_batch(engine, tickers, ticker_rows("venue", _tickers(), SYMBOLS[:100], NOW, "r0"), _entry("r0"))
    async with engine.begin() as conn:
        await conn.execute(quarantine.insert(), batch.quarantine)  # work done before in the transaction
        stored = await insert_new(conn, tickers, batch.rows + batch.rows[:5])  # keys repeated too
    assert stored == 599 - 99
    assert await _count(engine, tickers) == 599
    assert await _count(engine, quarantine) == 2


def test_copy_records_orders_by_table_columns_and_fills_missing_with_null():
    given = ticker_rows("venue", _tickers(), SYMBOLS[:2], NOW, "r1").rows
    full = keyed_rows(tickers, given)
    assert full[0]["instrument_key"] == instrument_key("venue", SYMBOLS[0])
    assert "instrument_key" not in given[0]  # the caller's rows are left as they were
    columns, records = copy_records(tickers, list(reversed(given)))
    assert sorted(columns) == sorted(c.name for c in tickers.columns)
    assert records == [tuple(row[c] for c in columns) for row in reversed(full)]
    partial = [{k: v for k, v in given[0].items() if k != "run_id"}, given[1]]
    _, records = copy_records(tickers, partial)
    assert records[0][columns.index("run_id")] is None and records[1] == tuple(full[1][c] for c in columns)


async def test_a_row_missing_a_required_value_fails_the_batch_instead_of_vanishing(engine):
    rows = ticker_rows("venue", _tickers(), SYMBOLS[:3], NOW, "r1").rows
    rows[1]["ts_source"] = None  # NOT NULL: no dialect may drop such a row as if it were a duplicate
    await ensure_row_partitions(engine, tickers, rows)
    with pytest.raises(Exception, match="(?i)not.null|null value"):
        async with engine.begin() as conn:
            await insert_new(conn, tickers, rows)
    assert await _count(engine, tickers) == 0
