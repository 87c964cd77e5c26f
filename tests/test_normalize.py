"""Rows that cannot be normalized are quarantined with their payload and reason."""

from __future__ import annotations

from perpflow.backfill import Watermark, plan_history
from perpflow.normalize import (
    funding_history_rows,
    funding_rate_rows,
    interval_hours,
    ms_to_datetime,
    ticker_rows,
)

NOW = 1_763_900_000_000


def _ticker(symbol, **fields):
    return {"symbol": symbol, "timestamp": NOW - 5, "bid": 1.0, "ask": 1.1, "last": 1.05} | fields


def test_bad_tickers_are_quarantined_and_the_rest_kept():
    tickers = {
        "A/USDT:USDT": _ticker("A/USDT:USDT"),
        "B/USDT:USDT": _ticker("B/USDT:USDT", last=-3.0),
        "C/USDT:USDT": _ticker("C/USDT:USDT", bid="abc"),
        "D/USDT:USDT": _ticker(None),
        "F/USDT:USDT": _ticker("F/USDT:USDT", timestamp=None, last=float("nan")),
        "G/USDT:USDT": _ticker("G/USDT:USDT", timestamp=None),
    }
    symbols = sorted(tickers) + ["E/USDT:USDT"]
    batch = ticker_rows("venue", tickers, symbols, NOW, "run-1")
    assert [row["symbol"] for row in batch.rows] == ["A/USDT:USDT", "G/USDT:USDT"]
    assert batch.rows[0]["ts"] == ms_to_datetime(NOW - 5) and batch.rows[0]["ts_source"] == "exchange"
    assert batch.rows[1]["ts"] == ms_to_datetime(NOW) and batch.rows[1]["ts_source"] == "received"
    reasons = {row["symbol"]: row["reason"] for row in batch.quarantine}
    assert reasons == {
        "B/USDT:USDT": "last=-3.0: a price must be positive",
        "C/USDT:USDT": "bid='abc': not a finite number",
        "D/USDT:USDT": "symbol=None: expected 'D/USDT:USDT'",
        "E/USDT:USDT": "no row for a requested symbol",
        "F/USDT:USDT": "last=nan: not a finite number",
    }
    assert batch.quarantine[0]["payload"]["last"] == -3.0
    assert (batch.requested, batch.received) == (7, 7)


def test_funding_rates_keep_rate_interval_and_refuse_absurd_ones():
    rates = {
        "A/USDT:USDT": {"symbol": "A/USDT:USDT", "fundingRate": 0.0001, "interval": "4h",
                         "fundingTimestamp": NOW + 1000, "nextFundingRate": 0.0002},
        "B/USDT:USDT": {"symbol": "B/USDT:USDT", "fundingRate": 0.5},
        "C/USDT:USDT": {"symbol": "C/USDT:USDT", "fundingRate": None},
    }
    batch = funding_rate_rows("v", rates, sorted(rates), NOW, "r", max_abs_rate=0.05)
    (row,) = batch.rows
    assert row["funding_rate"] == 0.0001 and row["interval_hours"] == 4.0
    assert row["next_funding_rate"] == 0.0002 and row["funding_ts"] == ms_to_datetime(NOW + 1000)
    assert [q["reason"] for q in batch.quarantine] == [
        "fundingRate=0.5: |rate| above 0.05 per interval",
        "fundingRate=None: missing",
    ]


def test_funding_history_needs_a_settlement_time():
    history = [
        {"symbol": "A/USDT:USDT", "timestamp": NOW, "fundingRate": 0.0001},
        {"symbol": "A/USDT:USDT", "timestamp": None, "fundingRate": 0.0001},
        {"symbol": "B/USDT:USDT", "timestamp": NOW, "fundingRate": 0.0001},
    ]
    batch = funding_history_rows("v", "A/USDT:USDT", history, 8.0, NOW, "r", 0.05)
    assert len(batch.rows) == 1 and batch.rows[0]["interval_hours"] == 8.0
    assert [q["reason"] for q in batch.quarantine] == [
        "timestamp=None: a settlement needs its time",
        "symbol='B/USDT:USDT': expected 'A/USDT:USDT'",
    ]


def test_interval_strings():
    assert [interval_hours(v) for v in ("8h", "60m", "1d", "x", None)] == [8.0, 1.0, 24.0, None, None]


def test_history_plan_backfills_new_symbols_and_waits_for_the_next_settlement():
    hour = 3_600_000
    plan = plan_history(
        ["NEW", "RECENT", "OLD"],
        {
            name: Watermark(None, ms, ms, 8.0)  # covered up to the newest stored settlement
            for name, ms in (("RECENT", NOW - 2 * hour), ("OLD", NOW - 9 * hour))
        },
        NOW,
        lookback_ms=7 * 24 * hour,
    )
    assert [(p.symbol, p.since_ms) for p in plan] == [
        ("NEW", NOW - 7 * 24 * hour),
        ("OLD", NOW - 9 * hour + 1),
    ]
