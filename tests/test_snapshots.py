"""How snapshot datasets are fetched when a venue refuses, fails or garbles part of a call: a real
ccxt client with recorded markets (../shared/realdata/bybit), its calls replaced by the venue's
behaviour. Every requested symbol ends as an item, an unparsed row or a per-symbol failure."""

from __future__ import annotations

import json

import ccxt
import pytest

from perpflow import snapshots
from perpflow.exchanges import TransientExchangeError, exchange_client, select_markets
from perpflow.scope import RunScope
from perpflow.settings import ExchangeConfig
from tests.conftest import shared_dir

VENUE = ExchangeConfig(id="bybit", api_url="http://127.0.0.1:9/bybit")


@pytest.fixture
def markets():
    recorded = json.loads(shared_dir("realdata", "bybit", "markets.json").read_text())
    return select_markets(recorded, ())


def ticker(symbol: str, **values) -> dict:
    return {"symbol": symbol, "timestamp": 1_700_000_000_000, "bid": 1.0, "ask": 2.0, **values}


async def run(client_patch, markets, per_symbol_max=0, done=None):
    async with RunScope():
        async with exchange_client(VENUE) as client:
            client.set_markets(markets)
            client_patch(client)
        return await snapshots.fetch_snapshots(VENUE, "tickers", markets, per_symbol_max, done)


async def test_one_bulk_call_per_contract_type(markets):
    calls = []

    def patch(client):
        async def fetch_tickers(symbols=None, params=None):
            calls.append(tuple(symbols))
            return {s: ticker(s) for s in symbols}
        client.fetch_tickers = fetch_tickers

    fetched = await run(patch, markets)
    assert set(fetched.items) == set(markets)
    assert {tuple(sorted(c)) for c in calls} == {
        tuple(sorted(s for s in markets if markets[s]["inverse"])),
        tuple(sorted(s for s in markets if not markets[s]["inverse"])),
    }


async def test_refused_symbol_list_falls_back_to_all_then_to_each(markets):
    calls = []

    def patch(client):
        async def fetch_tickers(symbols=None, params=None):
            calls.append("bulk" if symbols else "all")
            if symbols and len(symbols) > 1:
                raise ccxt.BadRequest("symbols cannot contain more than 1 symbol")
            raise ccxt.NotSupported("fetchTickers() needs a category")

        async def fetch_ticker(symbol, params=None):
            calls.append(symbol)
            return ticker(symbol)
        client.fetch_tickers, client.fetch_ticker = fetch_tickers, fetch_ticker

    fetched = await run(patch, markets)
    assert set(fetched.items) == set(markets) and not fetched.failed
    # Each contract type tried the list, then all symbols, then went one by one.
    assert calls.count("bulk") == 2 and calls.count("all") == 2
    assert sorted(c for c in calls if "/" in c) == sorted(markets)


async def test_one_symbols_failure_is_that_symbols_and_a_retry_asks_only_for_it(markets):
    asked = []
    bad = sorted(markets)[0]

    def patch(client, fail=True):
        async def fetch_ticker(symbol, params=None):
            asked.append(symbol)
            if symbol == bad and fail:
                raise ccxt.RequestTimeout("timed out")
            return ticker(symbol)
        client.fetch_ticker = fetch_ticker

    done: dict = {}
    first = await run(patch, markets, per_symbol_max=100, done=done)
    assert set(first.failed) == {bad} and isinstance(first.failed[bad], TransientExchangeError)
    assert set(first.items) == set(markets) - {bad}
    asked.clear()
    second = await run(lambda c: patch(c, fail=False), markets, per_symbol_max=100, done=done)
    assert asked == [bad]
    assert set(second.items) == set(markets) and not second.failed


async def test_bad_rows_of_a_bulk_payload_are_the_only_ones_quarantined(markets):
    linear = sorted(s for s in markets if not markets[s]["inverse"])
    bad = linear[0]

    def patch(client):
        async def fetch_tickers(symbols=None, params=None):
            rows = [{"symbol": markets[s]["id"], "lastPrice": "1.5"} for s in symbols]
            rows[[markets[s]["id"] for s in symbols].index(markets[bad]["id"])]["lastPrice"] = {}
            client.last_json_response = {"retCode": 0, "result": {"category": "x", "list": rows}}
            raise TypeError("unsupported operand")  # what ccxt's parser raises on the object
        client.fetch_tickers = fetch_tickers
        real_parse = client.parse_ticker

        def parse_ticker(raw, market=None):
            if isinstance(raw.get("lastPrice"), dict):
                raise TypeError("lastPrice is an object")
            return real_parse(raw, market)
        client.parse_ticker = parse_ticker

    fetched = await run(patch, {s: markets[s] for s in linear})
    assert [symbol for _, symbol, _ in fetched.unparsed] == [bad]
    assert set(fetched.items) == set(linear) - {bad}


def test_rows_are_found_in_any_envelope():
    rows = [{"a": 1}, {"a": 2}]
    assert snapshots.rows_in(rows) == rows
    assert snapshots.rows_in({"code": 0, "data": {"list": rows, "x": [{"b": 1}]}}) == rows
    assert snapshots.rows_in({"code": 0}) is None
