"""The standard reads (latest ticker per symbol, a symbol's window, daily funding) on a real SQLite
file and a real PostgreSQL database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from perpflow.normalize import funding_rate_rows, instrument_rows, ms_to_datetime, ticker_rows
from perpflow.store import (
    LedgerEntry,
    daily_funding,
    funding_rates,
    latest_tickers,
    store_batch,
    ticker_window,
    tickers,
    upsert_instruments,
)

DAY_MS = 86_400_000
T0 = 1_763_856_000_000  # 2025-11-23 00:00 UTC
SYMBOLS = ["AAA/USDT:USDT", "BBB/USDT:USDT", "CCC/USDT:USDT"]


def _entry(run_id: str, dataset: str) -> LedgerEntry:
    at = ms_to_datetime(T0)
    return LedgerEntry(run_id, "venue", dataset, "ok", at, at)


async def _fill(engine) -> None:
    markets = {
        s: {"id": s[:3], "base": s[:3], "quote": "USDT", "settle": "USDT", "linear": True}
        for s in SYMBOLS
    }
    await upsert_instruments(engine, instrument_rows("venue", markets, T0))
    # CCC is listed but never ticked; AAA and BBB tick at 0, 6, 12, ... 42 h; BBB also elsewhere.
    for step in range(8):
        ms = T0 + step * 6 * 3_600_000
        data = {
            s: {
                "symbol": s,
                "timestamp": ms,
                "bid": 1.0 + step,
                "ask": 2.0 + step,
                "last": 1.5 + step,
                "fundingRate": 0.0001 * (step + 1),
            }
            for s in SYMBOLS[:2]
        }
        await store_batch(
            engine,
            tickers,
            ticker_rows("venue", data, SYMBOLS[:2], ms, "r"),
            _entry(f"t{step}", "tickers"),
        )
        await store_batch(
            engine,
            funding_rates,
            funding_rate_rows("venue", data, SYMBOLS[:2], ms, "r", 0.05),
            _entry(f"f{step}", "funding_rates"),
        )
        other = ticker_rows(
            "other",
            {SYMBOLS[1]: {**data[SYMBOLS[1]], "last": 99.0}},
            [SYMBOLS[1]],
            ms + 60_000,
            "r",
        )
        await store_batch(
            engine,
            tickers,
            other,
            LedgerEntry(
                f"o{step}", "other", "tickers", "ok", ms_to_datetime(ms), ms_to_datetime(ms)
            ),
        )


async def test_latest_window_and_daily_funding(engine):
    await _fill(engine)
    async with engine.connect() as conn:
        latest = await latest_tickers(conn, "venue")
        window = await ticker_window(
            conn,
            "venue",
            SYMBOLS[0],
            ms_to_datetime(T0 + 12 * 3_600_000),
            ms_to_datetime(T0 + 30 * 3_600_000),
        )
        daily = await daily_funding(
            conn, "venue", ms_to_datetime(T0), ms_to_datetime(T0 + 2 * DAY_MS)
        )
    assert sorted((r.symbol, r.ts, r.last) for r in latest) == [
        (s, ms_to_datetime(T0 + 42 * 3_600_000), 8.5) for s in SYMBOLS[:2]
    ]
    assert [r.ts for r in window] == [ms_to_datetime(T0 + h * 3_600_000) for h in (12, 18, 24)]
    assert [(r.symbol, r.day, r.observations) for r in daily] == [
        (s, day, 4) for s in SYMBOLS[:2] for day in ("2025-11-23", "2025-11-24")
    ]
    first = daily[0]
    assert first.mean_rate == pytest.approx(0.00025) and first.max_rate == pytest.approx(0.0004)
    assert window[0].ts - window[-1].ts == -timedelta(hours=12)


async def test_latest_ticker_of_several_observations_at_one_time_is_the_newest_received(engine):
    """A venue whose time is its last trade's answers polls at 1, 2 and 3 min with the same
    ``ts`` and moving mark prices: the latest row is the one received last, once per symbol."""
    await _fill(engine)
    last_ts = T0 + 42 * 3_600_000
    for minute, mark in ((3, 7.0), (1, 5.0), (2, 6.0)):  # stored out of receipt order
        data = {s: {"symbol": s, "timestamp": last_ts, "bid": 8.0, "ask": 9.0, "last": 8.5,
                    "markPrice": mark} for s in SYMBOLS[:2]}
        batch = ticker_rows("venue", data, SYMBOLS[:2], last_ts + minute * 60_000, "r")
        result = await store_batch(engine, tickers, batch, _entry(f"m{minute}", "tickers"))
        assert result.stored == 2
    async with engine.connect() as conn:
        latest = await latest_tickers(conn, "venue")
        window = await ticker_window(
            conn, "venue", SYMBOLS[0], ms_to_datetime(last_ts), ms_to_datetime(last_ts + 1)
        )
    assert sorted((r.symbol, r.ts, r.mark_price) for r in latest) == [
        (s, ms_to_datetime(last_ts), 7.0) for s in SYMBOLS[:2]
    ]
    assert [r.mark_price for r in window] == [None, 5.0, 6.0, 7.0]  # by receipt time
