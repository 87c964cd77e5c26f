"""Deliberately bad ticker rows for the product's quarantine tests, as ccxt sees them."""

from __future__ import annotations

import json

import pytest

from perpflow.emulator import EmulatorServer, GeneratedVenue

from .helpers import FORMATS, ccxt_client, fixed_clock

TICKERS = {
    "binanceusdm": ("/fapi/v1/ticker/24hr", {}, "symbol", "lastPrice"),
    "bybit": ("/v5/market/tickers", {"category": "linear"}, "symbol", "lastPrice"),
    "okx": ("/api/v5/market/tickers", {"instType": "SWAP"}, "instId", "last"),
}


def ticker_rows(venue: GeneratedVenue) -> list[dict]:
    path, query, _, _ = TICKERS[venue.format]
    body = json.loads(venue.handle("GET", path, query).body)
    return body if venue.format == "binanceusdm" else body["result"]["list"] \
        if venue.format == "bybit" else body["data"]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_negative_price_and_missing_symbol_reach_ccxt(fmt):
    plain = GeneratedVenue(fmt, symbols=5, now_ms=fixed_clock)
    btc_id = plain.market_ids[0]
    bad = GeneratedVenue(fmt, symbols=5, now_ms=fixed_clock,
                         malformed={btc_id: "negative_price", 1: "missing_symbol"})
    async with EmulatorServer([bad]) as srv, ccxt_client(srv, fmt) as ex:
        await ex.load_markets()
        tickers = await ex.fetch_tickers(["BTC/USDT:USDT", "ETH/USDT:USDT", "C001/USDT:USDT"])
    assert tickers["BTC/USDT:USDT"]["last"] < 0
    assert "ETH/USDT:USDT" not in tickers  # ccxt silently skips a row without symbol
    assert tickers["C001/USDT:USDT"]["last"] > 0
    _, _, symbol_field, last_field = TICKERS[fmt]
    rows = ticker_rows(bad)
    assert sum(symbol_field not in row for row in rows) == 1
    assert next(r for r in rows if r.get(symbol_field) == btc_id)[last_field].startswith("-")


@pytest.mark.parametrize("fmt", FORMATS)
async def test_non_numeric_price_makes_ccxt_parsing_fail(fmt):
    """ccxt 4.5.90 raises a plain ValueError from parse_ticker for the whole call: the product
    must catch it (or parse the raw rows) to quarantine the row."""
    bad = GeneratedVenue(fmt, symbols=3, now_ms=fixed_clock, malformed={2: "non_numeric_price"})
    assert [row[TICKERS[fmt][3]] for row in ticker_rows(bad)].count("n/a") == 1
    async with EmulatorServer([bad]) as srv, ccxt_client(srv, fmt) as ex:
        await ex.load_markets()
        with pytest.raises(ValueError):
            await ex.fetch_tickers(["BTC/USDT:USDT", "C001/USDT:USDT"])


def test_drop_a_deterministic_fraction_of_tickers():
    kept = [len(ticker_rows(GeneratedVenue("bybit", symbols=300, now_ms=fixed_clock,
                                           drop_tickers=0.2))) for _ in range(2)]
    full = len(ticker_rows(GeneratedVenue("bybit", symbols=300, now_ms=fixed_clock)))
    assert kept[0] == kept[1] and 0.7 * full < kept[0] < 0.9 * full


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="kind"):
        GeneratedVenue("okx", symbols=2, malformed={0: "upside_down"})
    with pytest.raises(ValueError, match="no instrument"):
        GeneratedVenue("okx", symbols=2, malformed={"DOGE-USDT-SWAP": "negative_price"})
    with pytest.raises(ValueError, match="fraction"):
        GeneratedVenue("okx", symbols=2, drop_tickers=1.0)
