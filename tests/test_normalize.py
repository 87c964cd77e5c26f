"""Rows that cannot be normalized are quarantined with their payload and reason."""

from __future__ import annotations

import json

import ccxt
import pytest

from perpflow.backfill import Watermark, plan_history
from perpflow.normalize import (
    funding_history_rows,
    funding_rate_rows,
    interval_hours,
    ms_to_datetime,
    ticker_rows,
    ticker_volumes,
)
from tests.conftest import shared_dir

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


# -- volume units: ccxt's own parse of each venue's ticker body, then ticker_rows with markets ----
# Bodies are the venues' ticker formats as ccxt 4.5.90's parse_ticker documents them (the recorded
# fixtures in ../shared/realdata hold no inverse and no okx swap ticker); markets are recorded.


def _parsed(venue: str, body: dict, symbol: str):
    markets = json.loads((shared_dir("realdata", venue) / "markets.json").read_text())
    client = getattr(ccxt, venue)()
    client.set_markets(list(markets.values()))
    market = client.market(symbol)
    return client.parse_ticker(body, market), {symbol: market}


def _row(venue: str, body: dict, symbol: str) -> dict:
    ticker, markets = _parsed(venue, body, symbol)
    (row,) = ticker_rows(venue, {symbol: ticker}, [symbol], NOW, "r", markets=markets).rows
    return row


def test_inverse_volume_in_contracts_with_base_as_quote_is_put_right():
    # bybit inverse BTCUSD: volume24h counts 1-USD contracts, turnover24h is BTC; ccxt passes
    # them on as baseVolume and quoteVolume.
    body = {"symbol": "BTCUSD", "lastPrice": "16597.00", "indexPrice": "16598.54",
            "markPrice": "16596.00", "openInterestValue": "22505.67",
            "turnover24h": "2352.94950046", "volume24h": "49337318", "bid1Price": "16596.00",
            "ask1Price": "16597.50"}
    ticker, _ = _parsed("bybit", body, "BTC/USD:BTC")
    assert (ticker["baseVolume"], ticker["quoteVolume"]) == (49337318.0, 2352.94950046)
    row = _row("bybit", body, "BTC/USD:BTC")
    assert row["base_volume"] == 2352.94950046  # BTC
    assert row["quote_volume"] == 49337318.0  # USD: contracts x 1 USD
    assert row["contract_volume"] == 49337318.0


def test_inverse_volume_in_base_is_kept_and_only_contracts_become_quote():
    # binancecoinm BTCUSD_PERP (100 USD a contract): baseVolume is BTC; ccxt's quoteVolume is
    # baseVolume x weightedAvgPrice, which the venue's contract count confirms.
    body = {"baseVolume": "214549.95171161", "closeTime": "1621965286847", "lastPrice": "37993.4",
            "symbol": "BTCUSD_PERP", "volume": "81990451", "weightedAvgPrice": "38215.08713747",
            "openPrice": "37783.4", "highPrice": "39938.3", "lowPrice": "36457.2"}
    row = _row("binance", body, "BTC/USD:BTC")
    assert row["base_volume"] == 214549.95171161 and row["contract_volume"] is None
    assert row["quote_volume"] == pytest.approx(81990451 * 100, rel=1e-3)
    # okx BTC-USD-SWAP (100 USD a contract): vol24h contracts only, no quote volume from ccxt.
    body = {"instType": "SWAP", "instId": "BTC-USD-SWAP", "last": "67000.1", "vol24h": "1674938",
            "volCcy24h": "2499.9", "ts": "1710328243260"}
    row = _row("okx", body, "BTC/USD:BTC")
    assert row["contract_volume"] == 1674938.0
    assert row["quote_volume"] == 1674938.0 * 100 and row["base_volume"] is None


def test_linear_volume_in_contracts_of_a_thousandth_or_hundredth_becomes_base():
    # kucoinfutures XBTUSDTM (0.001 BTC a contract): volumeOf24h is already BTC (turnover / price).
    body = {"symbol": "XBTUSDTM", "turnoverOf24h": 659795309.2524643, "volumeOf24h": 9998.54,
            "markPrice": 67193.51, "indexPrice": 67184.81, "lastTradePrice": 67191.8}
    ticker, markets = _parsed("kucoinfutures", body, "BTC/USDT:USDT")
    assert markets["BTC/USDT:USDT"]["contractSize"] == 0.001
    row = _row("kucoinfutures", body, "BTC/USDT:USDT")
    assert (row["base_volume"], row["quote_volume"]) == (9998.54, 659795309.2524643)
    assert row["contract_volume"] is None
    # The same venue counting contracts (as okx does) would be converted: 9998540 contracts.
    contracts = {**body, "volumeOf24h": 9998540}
    row = _row("kucoinfutures", contracts, "BTC/USDT:USDT")
    assert row["base_volume"] == pytest.approx(9998.54) and row["contract_volume"] == 9998540.0
    # okx BTC-USDT-SWAP (0.01 BTC a contract): vol24h contracts, volCcy24h the BTC amount.
    body = {"instType": "SWAP", "instId": "BTC-USDT-SWAP", "last": "67000.1", "vol24h": "167493.8",
            "volCcy24h": "1674.938", "ts": "1710328243260"}
    row = _row("okx", body, "BTC/USDT:USDT")
    assert row["contract_volume"] == 167493.8
    assert row["base_volume"] == pytest.approx(float(body["volCcy24h"]))
    assert row["quote_volume"] is None


def test_linear_volume_of_unit_contracts_and_unknown_markets_stay_as_ccxt_gives_them():
    recorded = json.loads((shared_dir("realdata", "bybit") / "responses.json").read_text())
    (case,) = recorded["methods"]["fetchTicker"]
    body = case["httpResponse"]["result"]["list"][0]
    ticker, _ = _parsed("bybit", body, "BTC/USDT:USDT")
    row = _row("bybit", body, "BTC/USDT:USDT")
    assert (row["base_volume"], row["quote_volume"], row["contract_volume"]) == (
        ticker["baseVolume"], ticker["quoteVolume"], None)
    assert ticker_volumes(5.0, 10.0, 2.0, None) == (5.0, 10.0, None)
    spot = {"contract": False, "contractSize": None}
    assert ticker_volumes(5.0, 10.0, 2.0, spot) == (5.0, 10.0, None)
