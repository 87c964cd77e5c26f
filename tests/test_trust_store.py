"""The store under the faults of issue 13, on a real SQLite file and a real PostgreSQL database:
a commit whose acknowledgement is lost, quarantine repeated by sweeps and retries, NUL bytes in
venue text, two sessions creating the same day's partition, and revision 0010 itself."""

from __future__ import annotations

import asyncio
from datetime import date

import asyncpg
import pytest
from alembic import command
from sqlalchemy import column, func, insert, inspect, select, table

from perpflow.normalize import funding_history_rows, instrument_rows, ms_to_datetime, ticker_rows
from perpflow.store import (
    LedgerEntry,
    collection_ledger,
    create_engine,
    funding_history,
    init_schema,
    instruments,
    quarantine,
    store_batch,
    tickers,
    upsert_instruments,
    writes,
)
from perpflow.store.schema import quarantine_digest
from tests.test_migrations import _to

NOW = 1_763_900_000_000
HOUR = 3_600_000
SYMBOLS = [f"S{i:03d}/USDT:USDT" for i in range(100)]


def _entry(run_id: str, dataset: str = "tickers") -> LedgerEntry:
    at = ms_to_datetime(NOW)
    return LedgerEntry(run_id, "venue", dataset, "ok", at, at, 5.0)


def _tickers(symbols=SYMBOLS, bad: str | None = SYMBOLS[3]):
    data = {s: {"symbol": s, "timestamp": NOW, "bid": 1.0 + i, "ask": 2.0 + i, "last": 1.5 + i}
            for i, s in enumerate(symbols)}
    if bad:
        data[bad]["last"] = -1.0
    return data


async def _count(engine, table_) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(table_))).scalar_one()


async def _ledger(engine) -> list[tuple]:
    ledger = collection_ledger.c
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(ledger.run_id, ledger.status, ledger.requested, ledger.stored,
                   ledger.duplicates, ledger.quarantined, ledger.failed).order_by(ledger.run_id)
        )
        return [tuple(row) for row in rows]


async def test_a_store_retried_after_a_lost_acknowledgement_counts_what_it_stored(
    engine, monkeypatch
):
    """The commit succeeds but the client never hears of it; the task's retry stores the same
    batch again. Before: ``stored 0, duplicates 99``. Now: the batch's own counts."""
    real = writes.write_new
    lost = []

    async def acknowledgement_lost(*args, **kwargs):
        result = await real(*args, **kwargs)
        if not lost:
            lost.append(result)
            raise ConnectionResetError("connection reset after COMMIT was sent")
        return result

    monkeypatch.setattr(writes, "write_new", acknowledgement_lost)
    batch = ticker_rows("venue", _tickers(), SYMBOLS, NOW, "r1")
    with pytest.raises(ConnectionResetError):
        await store_batch(engine, tickers, batch, _entry("r1"))
    retried = await store_batch(engine, tickers, batch, _entry("r1"))  # the task's retry
    assert (retried.requested, retried.stored, retried.duplicates, retried.quarantined) == (
        100, 99, 0, 1)
    assert await _ledger(engine) == [("r1", "ok", 100, 99, 0, 1, 0)]
    assert await _count(engine, tickers) == 99
    assert await _count(engine, quarantine) == 1

    # Another batch of the same run (a flow retry fetching again) finds the rows stored: those are
    # duplicates, and its ledger row says so.
    again = await store_batch(engine, tickers, ticker_rows("venue", _tickers(), SYMBOLS, NOW, "r1"),
                              _entry("r1"))
    assert (again.stored, again.duplicates, again.quarantined) == (0, 99, 1)
    assert await _ledger(engine) == [("r1", "ok", 100, 0, 99, 1, 0)]


async def test_a_failure_row_never_replaces_the_row_of_a_stored_batch(engine):
    batch = ticker_rows("venue", _tickers(), SYMBOLS[:10], NOW, "r1")
    await store_batch(engine, tickers, batch, _entry("r1"))
    at = ms_to_datetime(NOW)
    failed = LedgerEntry("r1", "venue", "tickers", "failed", at, at, None, "OSError: down")
    await writes.record_failure(engine, failed, 10)
    assert await _ledger(engine) == [("r1", "ok", 10, 9, 0, 1, 0)]
    other = LedgerEntry("r2", "venue", "tickers", "failed", at, at, None, "OSError: down")
    await writes.record_failure(engine, other, 10)
    assert (await _ledger(engine))[1] == ("r2", "failed", 10, 0, 0, 0, 10)


async def test_quarantined_history_is_held_once_over_sweeps_and_each_run_counts_its_refusals(
    engine,
):
    """21 bad settlements of one symbol, swept twice: quarantine holds 21 rows (it held 42), and
    both runs' ledger rows say they refused 21."""
    history = [{"symbol": "S000/USDT:USDT", "timestamp": NOW - i * 8 * HOUR,
                "fundingRate": 0.5 if i % 2 else None} for i in range(21)]
    for run in ("sweep1", "sweep2"):
        batch = funding_history_rows("venue", "S000/USDT:USDT", history, 8.0, NOW, run, 0.05)
        result = await store_batch(engine, funding_history, batch, _entry(run, "funding_history"))
        assert (result.requested, result.stored, result.quarantined) == (21, 0, 21)
    assert await _count(engine, quarantine) == 21
    assert [row[5] for row in await _ledger(engine)] == [21, 21]


async def test_nul_bytes_are_escaped_in_stored_symbols_and_quarantine_payloads(engine):
    """A NUL inside a quarantined payload failed the whole step on PostgreSQL (JSONB refuses it),
    and a NUL in a symbol failed that venue every run. Now both are stored, recoverably."""
    odd = "BAD\x00/USDT:USDT"
    data = _tickers(SYMBOLS[:5] + [odd], bad=None)
    data[SYMBOLS[1]]["info"] = {"lastPr\x00ice": "x\x00y"}
    data[SYMBOLS[1]]["last"] = -2.0
    markets = {s: {"id": s.replace("/", ""), "base": "S", "quote": "USDT", "settle": "USDT",
                   "linear": True, "contractSize": 1.0, "active": True} for s in data}
    await upsert_instruments(engine, instrument_rows("venue", markets, NOW))
    batch = ticker_rows("venue", data, list(data), NOW, "r1")
    result = await store_batch(engine, tickers, batch, _entry("r1"))
    assert (result.stored, result.quarantined) == (5, 1)
    escaped = "BAD\\u0000/USDT:USDT"
    async with engine.connect() as conn:
        symbols = set((await conn.execute(select(tickers.c.symbol))).scalars())
        listed = set((await conn.execute(select(instruments.c.symbol))).scalars())
        (held,) = (await conn.execute(select(quarantine))).all()
    assert escaped in symbols and escaped in listed and odd not in symbols
    assert held.payload["info"] == {"lastPr\\u0000ice": "x\\u0000y"}
    assert "escaped as the text \\u0000" in held.reason and held.reason.startswith("last=-2.0")
    assert held.digest == quarantine_digest("venue", "tickers", SYMBOLS[1], held.reason,
                                            held.payload)
    # Storing it again is a duplicate (the escaped key is the key), not a second row.
    again = await store_batch(engine, tickers, ticker_rows("venue", data, list(data), NOW, "r2"),
                              _entry("r2"))
    assert (again.stored, again.duplicates, again.quarantined) == (0, 5, 1)
    assert await _count(engine, quarantine) == 1


async def _create_day_concurrently(dsn: str, day: date) -> tuple[str | None, object]:
    """Session A creates ``day``'s tickers partition in an open transaction; session B asks for
    the same day meanwhile (it waits for A's lock), then A commits: B's outcome."""
    first, second = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        transaction = first.transaction()
        await transaction.start()
        made = await first.fetchval("SELECT perpflow_ensure_partition('tickers', $1)", day)
        waiting = asyncio.create_task(
            second.fetchval("SELECT perpflow_ensure_partition('tickers', $1)", day)
        )
        await asyncio.sleep(0.5)
        assert not waiting.done()  # B waits for A's advisory lock
        await transaction.commit()
        try:
            return made, await waiting
        except asyncpg.PostgresError as exc:
            return made, exc
    finally:
        await first.close()
        await second.close()


@pytest.mark.parametrize("blank_database_url", ["postgresql"], indirect=True)
async def test_two_sessions_creating_the_same_day_both_succeed(blank_database_url):
    engine = create_engine(blank_database_url)
    dsn = blank_database_url.replace("+asyncpg", "")
    try:
        await init_schema(engine)
        async with engine.begin() as conn:  # revision 0002's function: the race is real
            await conn.run_sync(_to("0009", command.downgrade))
        made, outcome = await _create_day_concurrently(dsn, date(2031, 1, 1))
        assert made == "tickers_p20310101"
        assert isinstance(outcome, asyncpg.DuplicateTableError)
        await init_schema(engine)
        made, outcome = await _create_day_concurrently(dsn, date(2031, 1, 2))
        assert (made, outcome) == ("tickers_p20310102", None)
    finally:
        await engine.dispose()


async def test_revision_0010_digests_existing_quarantine_keeping_the_first_of_repeats(
    blank_database_url,
):
    engine = create_engine(blank_database_url)
    try:
        await init_schema(engine)
        async with engine.begin() as conn:
            await conn.run_sync(_to("0009", command.downgrade))
            names = ("exchange", "dataset", "symbol", "payload", "reason", "run_id",
                     "quarantined_at")
            old = table("quarantine", *(column(n, quarantine.c[n].type) for n in names))
            at = ms_to_datetime(NOW)
            rows = [("venue", "funding_history", "A", {"fundingRate": None, "k": [1, 2]},
                     "missing", run, at) for run in ("s1", "s2", "s3")]
            rows.append(("venue", "tickers", "B", {"last": -1}, "negative", "s1", at))
            await conn.execute(insert(old), [dict(zip(names, row)) for row in rows])
            ledger_columns = await conn.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("collection_ledger")})
            assert "batch_id" not in ledger_columns
        await init_schema(engine)
        async with engine.connect() as conn:
            kept = (await conn.execute(select(quarantine).order_by(quarantine.c.id))).all()
        assert [(row.symbol, row.run_id) for row in kept] == [("A", "s1"), ("B", "s1")]
        assert [row.digest for row in kept] == [
            quarantine_digest(r.exchange, r.dataset, r.symbol, r.reason, r.payload) for r in kept
        ]
        async with engine.begin() as conn:
            await conn.run_sync(_to("0009", command.downgrade))
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("quarantine")})
        assert "digest" not in columns
        await init_schema(engine)
        assert await _count(engine, quarantine) == 2
    finally:
        await engine.dispose()


async def test_a_symbol_missing_in_each_run_is_a_quarantine_record_per_run(engine):
    """A refused payload is held once, but an absence is an observation of its run: each run
    where a requested symbol has no row keeps its own record (its receipt time in the payload)."""
    for run, at in (("r1", NOW), ("r2", NOW + 60_000)):
        batch = ticker_rows("venue", _tickers(SYMBOLS[:3], bad=None), SYMBOLS[:4], at, run)
        result = await store_batch(engine, tickers, batch, _entry(run))
        assert (result.requested, result.stored + result.duplicates, result.quarantined) == (
            4, 3, 1)
    async with engine.connect() as conn:
        held = (await conn.execute(select(quarantine.c.run_id, quarantine.c.payload)
                                   .order_by(quarantine.c.run_id))).all()
    assert [(run, payload["received_ms"]) for run, payload in held] == [
        ("r1", NOW), ("r2", NOW + 60_000)]
