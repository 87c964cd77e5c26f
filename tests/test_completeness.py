"""The completeness certificate on both stores, from known rows: a fully collected day certifies
with nothing unexplained; a missing run is unexplained; a failed step, failed symbols, an
unsupported dataset, an open circuit and a history window beyond the venue's horizon are
explained with their reasons; the certificate is stored, replaced, read back, judged by
report-health, and published by the certify-completeness flow."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from prefect.client.orchestration import get_client

from flows.certify_completeness import ARTIFACT_KEY, certify_completeness
from perpflow import health
from perpflow.completeness import (
    HISTORY,
    UNCHANGED,
    VENUE_DOWN,
    compute_certificate,
    settlements_between,
)
from perpflow.store import (
    collection_ledger,
    funding_gaps,
    funding_history,
    funding_intervals,
    funding_rates,
    insert_new,
    instruments,
    tickers,
)
from perpflow.store.completeness import read_certificate, write_certificate
from perpflow.store.partitions import ensure_partitions

DAY = date(2026, 1, 10)
START = datetime(2026, 1, 10, tzinfo=UTC)
NOW = START + timedelta(days=1, minutes=15)
HOUR = timedelta(hours=1)
INTERVALS = {"tickers": 3600, "funding_rates": 3600}  # one run an hour: 24 slots a day
SYMBOLS = ("A/USDT:USDT", "B/USDT:USDT")
WANTED = {"v": ["tickers", "funding_rates", "funding_history"]}


def _instrument(exchange: str, symbol: str, first: datetime, last: datetime) -> dict:
    return {"exchange": exchange, "symbol": symbol, "market_id": symbol.replace("/", ""),
            "active": True, "first_seen": first, "last_seen": last}


def _ticker(exchange: str, symbol: str, at: datetime, run_id: str) -> dict:
    return {"exchange": exchange, "symbol": symbol, "ts": at, "ts_source": "venue", "bid": 1.0,
            "ask": 2.0, "last": 1.5, "collected_at": at + timedelta(seconds=2), "run_id": run_id}


def _rate(exchange: str, symbol: str, at: datetime, run_id: str) -> dict:
    return {"exchange": exchange, "symbol": symbol, "ts": at, "ts_source": "venue",
            "funding_rate": 0.0001, "interval_hours": 8.0,
            "collected_at": at + timedelta(seconds=2), "run_id": run_id}


def _ledger(exchange: str, dataset: str, status: str, at: datetime, run_id: str, *,
            requested: int = 0, failed: int = 0, duplicates: int = 0,
            failed_symbols: dict | None = None, error: str | None = None) -> dict:
    stored = requested - failed - duplicates if status in ("ok", "partial") else 0
    return {"run_id": run_id, "exchange": exchange, "dataset": dataset, "requested": requested,
            "received": stored + duplicates, "stored": stored, "duplicates": duplicates,
            "quarantined": 0, "failed": failed, "failed_symbols": failed_symbols,
            "attempts": 1, "status": status, "error": error, "started_at": at,
            "finished_at": at + timedelta(seconds=1)}


async def _insert(engine, table, rows: list[dict]) -> None:
    async with engine.begin() as conn:
        if table.name in ("tickers", "funding_rates"):
            days = {row["ts"].date() for row in rows}
            await ensure_partitions(conn, table.name, days)
        if table.name in ("tickers", "funding_rates", "funding_history", "instruments"):
            await insert_new(conn, table, rows)
        else:
            await conn.execute(table.insert(), rows)


async def _full_day(engine, *, skip_ticker_hours=(), skip_rate_hours=(), skip_rates=()):
    """Venue ``v`` with A and B listed before the day and still listed: tickers and funding
    rates every hour (some runs left out), settlements every 8 h all stored."""
    await _insert(engine, instruments, [
        _instrument("v", s, START - timedelta(days=3), NOW - timedelta(minutes=10))
        for s in SYMBOLS
    ])
    ticks, rates, ledger = [], [], []
    for h in range(24):
        at, run = START + h * HOUR, f"run-{h}"
        if h not in skip_ticker_hours:
            ticks += [_ticker("v", s, at, run) for s in SYMBOLS]
            ledger.append(_ledger("v", "tickers", "ok", at, run, requested=2))
        if h not in skip_rate_hours:
            kept = [s for s in SYMBOLS if (h, s) not in skip_rates]
            rates += [_rate("v", s, at, run) for s in kept]
            if len(kept) == len(SYMBOLS):
                ledger.append(_ledger("v", "funding_rates", "ok", at, run, requested=2))
    await _insert(engine, tickers, ticks)
    await _insert(engine, funding_rates, rates)
    await _insert(engine, collection_ledger, ledger)
    await _insert(engine, funding_intervals, [
        {"exchange": "v", "symbol": s, "valid_from": START - timedelta(days=5),
         "valid_to": None, "interval_hours": 8.0, "source": "venue"} for s in SYMBOLS
    ])


async def _settlements(engine, symbols=SYMBOLS, skip=()):
    await _insert(engine, funding_history, [
        {"exchange": "v", "symbol": s, "funding_ts": START + h * HOUR, "funding_rate": 0.0001,
         "interval_hours": 8.0, "collected_at": START + h * HOUR + timedelta(minutes=1),
         "run_id": f"sweep-{h}"}
        for s in symbols for h in (0, 8, 16) if (s, h) not in skip
    ])


def _by(rows: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["exchange"], r["dataset"]): r for r in rows}


async def _certify(engine, wanted=WANTED) -> dict[tuple[str, str], dict]:
    return _by(await compute_certificate(engine, DAY, INTERVALS, wanted, now=NOW, run_id="c1"))


def test_settlements_between_counts_epoch_aligned_times():
    day = int(START.timestamp() * 1000)
    assert settlements_between(day, day + 86_400_000, 8.0) == 3
    assert settlements_between(day + 1, day + 86_400_000, 8.0) == 2
    assert settlements_between(day, day + 86_400_000, 1.0) == 24
    assert settlements_between(day, day, 8.0) == 0
    assert settlements_between(day, day + 86_400_000, 0.0) == 0


async def test_fully_collected_day_certifies_with_nothing_unexplained(engine):
    await _full_day(engine)
    await _settlements(engine)
    rows = await _certify(engine)
    assert set(rows) == {("v", "tickers"), ("v", "funding_rates"), ("v", HISTORY)}
    for dataset, expected in (("tickers", 48), ("funding_rates", 48), (HISTORY, 6)):
        row = rows[("v", dataset)]
        assert (row["instruments"], row["expected"], row["stored"], row["explained"],
                row["unexplained"]) == (2, expected, expected, 0, 0), row
        assert row["reasons"] is None and row["day"] == DAY


async def test_missing_run_is_unexplained(engine):
    await _full_day(engine, skip_ticker_hours=(5, 6))
    await _settlements(engine, skip={("A/USDT:USDT", 16)})
    rows = await _certify(engine)
    assert (rows[("v", "tickers")]["stored"], rows[("v", "tickers")]["unexplained"]) == (44, 4)
    assert rows[("v", HISTORY)]["unexplained"] == 1  # no gap, no failure: a lost settlement
    assert rows[("v", "funding_rates")]["unexplained"] == 0


async def test_failures_unsupported_and_unreachable_history_are_explained(engine):
    await _full_day(engine, skip_rate_hours=(7, 11, 12), skip_rates={(9, "B/USDT:USDT")})
    await _insert(engine, collection_ledger, [
        _ledger("v", "funding_rates", "failed", START + 7 * HOUR, "run-7", requested=2,
                failed=2, error="NetworkError: connection reset by venue"),
        _ledger("v", "funding_rates", "partial", START + 9 * HOUR, "run-9", requested=2,
                failed=1, failed_symbols={"B/USDT:USDT": "RequestTimeout: 10 s"}),
        _ledger("v", "funding_rates", "circuit_open", START + 11 * HOUR, "run-11",
                error="circuit open since 10:58"),
        _ledger("v", "funding_rates", "ok", START + 12 * HOUR, "run-12", requested=2,
                duplicates=2),
    ])
    # B's 00:00 settlement is older than the venue keeps; the sweep recorded it unfillable.
    await _settlements(engine, skip={("B/USDT:USDT", 0)})
    await _insert(engine, funding_gaps, [{
        "exchange": "v", "symbol": "B/USDT:USDT", "gap_from": START - 8 * HOUR,
        "gap_to": START, "interval_hours": 8.0, "missing": 2, "status": "unfillable",
        "detail": "beyond_venue_horizon: the venue serves 30 days", "found_at": NOW,
    }])
    # Venue w: funding history not offered by ccxt there (every run says so).
    await _insert(engine, instruments, [
        _instrument("w", "C/USD:USD", START - timedelta(days=1), NOW - timedelta(minutes=5))])
    await _insert(engine, funding_intervals, [{
        "exchange": "w", "symbol": "C/USD:USD", "valid_from": START - timedelta(days=1),
        "valid_to": None, "interval_hours": 8.0, "source": "venue"}])
    await _insert(engine, collection_ledger, [
        _ledger("w", HISTORY, "unsupported", START + h * HOUR, f"w-{h}",
                error="not offered by ccxt: has['fetchFundingRateHistory'] is False")
        for h in (0, 12)
    ])
    rows = await _certify(engine, {**WANTED, "w": [HISTORY]})

    rates = rows[("v", "funding_rates")]
    assert (rates["expected"], rates["stored"], rates["unexplained"]) == (48, 41, 0), rates
    assert rates["reasons"] == {"failed: NetworkError": 2, "failed symbol: RequestTimeout": 1,
                                VENUE_DOWN: 2, UNCHANGED: 2}
    assert "B/USDT:USDT" in rates["detail"] and "connection reset" in rates["detail"]

    history = rows[("v", HISTORY)]
    assert (history["expected"], history["stored"], history["unexplained"]) == (6, 5, 0)
    assert history["reasons"] == {"unfillable: beyond_venue_horizon": 1}
    assert "B/USDT:USDT 2026-01-09 16:00" in history["detail"]

    unsupported = rows[("w", HISTORY)]
    assert (unsupported["expected"], unsupported["stored"], unsupported["unexplained"]) == (
        3, 0, 0)
    assert unsupported["reasons"] == {"unsupported": 3}
    assert "fetchFundingRateHistory" in unsupported["detail"]


async def test_a_venue_that_stopped_is_expected_until_the_end_of_the_day(engine):
    """Nothing ran after 06:00 (the listing stops there too): the rest of the day is missing,
    not silently unexpected; an instrument dropped from the listing at 06:00 is not."""
    await _insert(engine, instruments, [
        _instrument("v", "A/USDT:USDT", START - timedelta(days=1), START + 6 * HOUR),
        _instrument("v", "B/USDT:USDT", START - timedelta(days=1), START + 3 * HOUR),
        _instrument("v", "N/USDT:USDT", START + 2 * HOUR + timedelta(minutes=1),
                    START + 6 * HOUR),
    ])
    await _insert(engine, tickers, [
        _ticker("v", s, START + h * HOUR, f"run-{h}")
        for h in range(7) for s in ("A/USDT:USDT", "B/USDT:USDT", "N/USDT:USDT")
        if not (s == "B/USDT:USDT" and h > 3) and not (s == "N/USDT:USDT" and h < 2)
    ])
    row = (await _certify(engine, {"v": ["tickers"]}))[("v", "tickers")]
    # A: 24 slots, B: hours 0-3 (4), N: hours 2-23 (22); stored A 7, B 4, N 5.
    assert (row["instruments"], row["expected"], row["stored"]) == (3, 50, 16)
    assert row["unexplained"] == 34


async def test_certificate_is_stored_replaced_and_judged_by_health(engine, database_url):
    await _full_day(engine, skip_ticker_hours=(3,))
    await _settlements(engine)
    rows = await compute_certificate(engine, DAY, INTERVALS, WANTED, now=NOW, run_id="c1")
    assert await write_certificate(engine, rows) == 3
    stored = _by(await read_certificate(engine, DAY))
    assert stored[("v", "tickers")]["unexplained"] == 2
    assert stored[("v", "tickers")]["certified_at"] == NOW

    checks = await health.certificate_checks(database_url, NOW)
    assert [(c.name, c.status, c.value) for c in checks] == [
        ("completeness.v.tickers", health.CRIT, 2.0)]
    assert f"{DAY}: 2 of 48" in checks[0].detail

    # The missing run's rows arrive late (a delayed write): certifying again replaces the row.
    await _insert(engine, tickers, [_ticker("v", s, START + 3 * HOUR, "run-3") for s in SYMBOLS])
    again = await compute_certificate(engine, DAY, INTERVALS, WANTED, now=NOW, run_id="c2")
    await write_certificate(engine, again)
    stored = _by(await read_certificate(engine, DAY - timedelta(days=1), DAY))
    assert len(stored) == 3 and stored[("v", "tickers")]["unexplained"] == 0
    assert stored[("v", "tickers")]["run_id"] == "c2"
    (check,) = await health.certificate_checks(database_url, NOW)
    assert (check.name, check.status, check.value) == ("completeness", health.OK, 3.0)
    (none,) = await health.certificate_checks(database_url, NOW + timedelta(days=30))
    assert none.status == health.NA


@pytest.mark.usefixtures("prefect_server")
async def test_certify_completeness_flow_stores_and_publishes(engine, database_url, monkeypatch):
    await _full_day(engine, skip_ticker_hours=(4,))
    await _settlements(engine)
    monkeypatch.setenv("PERPFLOW_DATABASE_URL", database_url)
    monkeypatch.setenv("PERPFLOW_EXCHANGES", '[{"id": "binanceusdm", "name": "v"}]')
    monkeypatch.setenv("PERPFLOW_TICKER_INTERVAL_SECONDS", "3600")
    monkeypatch.setenv("PERPFLOW_FUNDING_INTERVAL_SECONDS", "3600")
    rows = await certify_completeness(day=DAY)
    assert {(r["dataset"], r["unexplained"]) for r in rows} == {
        ("tickers", 2), ("funding_rates", 0), (HISTORY, 0)}
    assert _by(await read_certificate(engine, DAY)) == _by(rows)
    async with get_client() as client:
        artifact = await client.read_latest_artifacts(limit=50)
    (published,) = [a for a in artifact if a.key == ARTIFACT_KEY]
    assert "1 of 3 row(s) unexplained" in published.description
    assert '"unexplained": 2' in str(published.data) or "'unexplained': 2" in str(published.data)


async def test_revision_0012_downgrades_and_upgrades(blank_database_url):
    """Down to 0009: no completeness table, the partition function as 0002 made it (any day);
    up again: the table and the day check are back."""
    from alembic import command
    from sqlalchemy import inspect

    from perpflow.store import create_engine, init_schema
    from tests.test_migrations import _to

    engine = create_engine(blank_database_url)
    try:
        await init_schema(engine)
        async with engine.begin() as conn:
            await conn.run_sync(_to("0009", command.downgrade))
            assert "completeness" not in await conn.run_sync(
                lambda c: inspect(c).get_table_names())
            if engine.dialect.name == "postgresql":
                body = (await conn.exec_driver_sql(
                    "SELECT prosrc FROM pg_proc WHERE proname = 'perpflow_ensure_partition'"
                )).scalar_one()
                assert "may only open" not in body
            await conn.run_sync(_to("head", command.upgrade))
            assert "completeness" in await conn.run_sync(lambda c: inspect(c).get_table_names())
            if engine.dialect.name == "postgresql":
                body = (await conn.exec_driver_sql(
                    "SELECT prosrc FROM pg_proc WHERE proname = 'perpflow_ensure_partition'"
                )).scalar_one()
                assert "may only open" in body
    finally:
        await engine.dispose()
