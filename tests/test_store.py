"""Idempotent writes on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sqlalchemy import func, select

from perpflow.normalize import (
    funding_rate_rows,
    instrument_rows,
    ms_to_datetime,
    ticker_rows,
)
from perpflow.store import (
    LedgerEntry,
    collection_ledger,
    funding_rates,
    instrument_key,
    insert_new,
    instruments,
    quarantine,
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
    assert await _count(engine, quarantine) == 1  # the same refusal is held once
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
    # The same batch again (a retry after a lost acknowledgement): its own counts, not duplicates.
    assert (row.stored, row.duplicates, row.quarantined) == (9, 0, 1)


async def test_instruments_keep_first_seen(engine):
    markets = {s: {"id": s.replace("/", ""), "base": s[:4], "quote": "USDT", "settle": "USDT",
                   "linear": True, "contractSize": 1.0, "active": True} for s in SYMBOLS[:3]}
    await upsert_instruments(engine, instrument_rows("venue", markets, NOW))
    await upsert_instruments(engine, instrument_rows("venue", markets, NOW + 60_000))
    async with engine.connect() as conn:
        row = (await conn.execute(select(instruments).where(instruments.c.symbol == SYMBOLS[0]))).one()
    assert row.first_seen == ms_to_datetime(NOW) and row.last_seen == ms_to_datetime(NOW + 60_000)


async def test_partly_stored_batch_counts_only_new_rows_and_keeps_earlier_work(engine):
    batch = ticker_rows("venue", _tickers(), SYMBOLS, NOW, "r1")
    await store_batch(engine, tickers, ticker_rows("venue", _tickers(), SYMBOLS[:100], NOW, "r0"), _entry("r0"))
    async with engine.begin() as conn:
        earlier = [{**q, "reason": "earlier work"} for q in batch.quarantine]
        await conn.execute(quarantine.insert(), earlier)  # work done before in the transaction
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


async def test_a_changed_observation_at_the_same_time_is_stored_and_an_identical_one_is_not(engine):
    """A venue whose time is its last trade's: later polls keep ``ts`` but bring a new mark price
    or funding rate. Identical values are duplicates; changed values are new rows, counted
    stored, and both observations keep their receipt time."""
    symbols = SYMBOLS[:4]

    def poll(received_ms, mark=100.0, rate=1e-4, run_id="r"):
        data = {s: {"symbol": s, "timestamp": NOW, "bid": 1.0, "ask": 1.5, "last": 1.2,
                    "markPrice": mark, "fundingRate": rate, "fundingTimestamp": NOW + 3_600_000}
                for s in symbols}
        return (
            ticker_rows("venue", data, symbols, received_ms, run_id),
            funding_rate_rows("venue", data, symbols, received_ms, run_id, 0.05),
        )

    polls = [
        ("r1", poll(NOW + 1_000, run_id="r1"), len(symbols)),
        ("r2", poll(NOW + 61_000, run_id="r2"), 0),  # identical: duplicates
        ("r3", poll(NOW + 121_000, mark=100.5, run_id="r3"), len(symbols)),  # mark price moved
        ("r4", poll(NOW + 181_000, mark=100.5, rate=2e-4, run_id="r4"), len(symbols)),
    ]
    for run_id, (ticker_batch, rate_batch), new in polls:
        t = await store_batch(engine, tickers, ticker_batch, _entry(run_id))
        f = await store_batch(engine, funding_rates, rate_batch, _entry(run_id, "funding_rates"))
        # the funding rate is not a ticker value: r4 changes no ticker
        ticker_new = 0 if run_id == "r4" else new
        assert (t.stored, t.duplicates) == (ticker_new, len(symbols) - ticker_new)
        assert (f.stored, f.duplicates) == (new, len(symbols) - new)
    async with engine.connect() as conn:
        ledger = (await conn.execute(
            select(collection_ledger.c.run_id, collection_ledger.c.dataset, collection_ledger.c.stored)
            .order_by(collection_ledger.c.run_id, collection_ledger.c.dataset))).all()
        kept = (await conn.execute(
            select(funding_rates.c.ts, funding_rates.c.collected_at, funding_rates.c.mark_price,
                   funding_rates.c.funding_rate, funding_rates.c.obs_key)
            .where(funding_rates.c.symbol == symbols[0]).order_by(funding_rates.c.collected_at))).all()
    assert [tuple(r) for r in ledger] == [
        ("r1", "funding_rates", 4), ("r1", "tickers", 4), ("r2", "funding_rates", 0),
        ("r2", "tickers", 0), ("r3", "funding_rates", 4), ("r3", "tickers", 4),
        ("r4", "funding_rates", 4), ("r4", "tickers", 0),
    ]
    assert [(r.ts, r.collected_at, r.mark_price, r.funding_rate) for r in kept] == [
        (ms_to_datetime(NOW), ms_to_datetime(NOW + 1_000), 100.0, 1e-4),
        (ms_to_datetime(NOW), ms_to_datetime(NOW + 121_000), 100.5, 1e-4),
        (ms_to_datetime(NOW), ms_to_datetime(NOW + 181_000), 100.5, 2e-4),
    ]
    assert len({r.obs_key for r in kept}) == 3
    assert await _count(engine, tickers) == 2 * len(symbols)


def test_observation_key_follows_values_not_bookkeeping():
    rows = ticker_rows("venue", _tickers(), SYMBOLS[:2], NOW, "r1").rows
    later = [{**row, "collected_at": row["collected_at"] + timedelta(minutes=1), "run_id": "r2"}
             for row in rows]
    moved = [{**rows[0], "mark_price": 7.0}, {**rows[1], "contract_volume": 3.0}]
    keys = [row["obs_key"] for row in keyed_rows(tickers, rows)]
    assert [row["obs_key"] for row in keyed_rows(tickers, later)] == keys
    assert all(a != b for a, b in zip(keys, (r["obs_key"] for r in keyed_rows(tickers, moved))))
    # the COPY path derives the same key as keyed_rows
    columns, records = copy_records(tickers, rows)
    assert [record[columns.index("obs_key")] for record in records] == keys
