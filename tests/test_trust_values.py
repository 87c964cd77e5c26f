"""Malformed values behind ccxt's numbers are quarantined, real payloads are not; one observation
per symbol per bulk response (issue 13, finding 3)."""

from __future__ import annotations

import json

import pytest

from perpflow import snapshots
from perpflow.exchanges import exchange_client, select_markets
from perpflow.normalize import funding_history_rows, funding_rate_rows, raw_defect, ticker_rows
from perpflow.scope import RunScope
from perpflow.settings import ExchangeConfig
from tests.conftest import shared_dir

NOW = 1_763_900_000_000
S = "BTC/USDT:USDT"


def _ticker(info: dict, **values) -> dict:
    return {"symbol": S, "timestamp": NOW, "bid": 1.0, "ask": 2.0, "last": 1.5, "info": info,
            **values}


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        ({"symbol": "BTCUSDT", "lastPrice": {"value": "1.5"}}, 'info.lastPrice={"value": "1.5"}'),
        ({"symbol": "BTCUSDT", "bid1Price": True}, "info.bid1Price=true: a bool"),
        ({"symbol": "BTCUSDT", "markPx": [1.5]}, "info.markPx=[1.5]: a list"),
        ({"symbol": "BTCUSDT", "best_bid": "1.5abc"}, 'info.best_bid="1.5abc": text that is no'),
        ({"symbol": "BTCUSDT", "volume": False}, "info.volume=false: a bool"),
    ],
)
def test_a_malformed_raw_value_is_quarantined_whatever_ccxt_made_of_it(info, reason):
    batch = ticker_rows("venue", {S: _ticker(info)}, [S], NOW, "r")
    assert batch.rows == []
    (held,) = batch.quarantine
    assert held["reason"].startswith(reason), held["reason"]
    assert held["payload"]["info"] == info


def test_fields_that_only_mention_a_price_word_and_empty_values_pass():
    info = {"symbol": "BTCUSDT", "lastTickDirection": "PlusTick", "markMethod": "FairPrice",
            "fundingRateInterval": "8h", "bid1Price": "", "ask1Price": None, "lastPrice": "1.5",
            "indexPrice": 1.4, "priceFilter": {"tickSize": "0.1"}, "isPreListing": False}
    assert raw_defect(_ticker(info)) is None
    assert len(ticker_rows("venue", {S: _ticker(info)}, [S], NOW, "r").rows) == 1


def test_a_boolean_or_object_rate_is_quarantined_in_current_and_historical_funding():
    rate = {"symbol": S, "timestamp": NOW, "fundingRate": 1e-4, "info": {"fundingRate": True}}
    batch = funding_rate_rows("venue", {S: rate}, [S], NOW, "r", 0.05)
    assert [q["reason"][:27] for q in batch.quarantine] == ["info.fundingRate=true: a bo"]
    history = [{**rate, "timestamp": NOW - 8 * 3_600_000, "info": {"fundingRate": {"r": 1}}},
               {**rate, "info": {"fundingRate": "0.0001"}}]
    batch = funding_history_rows("venue", S, history, 8.0, NOW, "r", 0.05)
    assert len(batch.rows) == 1 and batch.quarantine[0]["reason"].startswith("info.fundingRate={")


def _items(responses: dict) -> list[dict]:
    """Every ticker and funding-rate item ccxt parsed from the recorded responses."""
    found = []
    for method, cases in responses["methods"].items():
        if method not in ("fetchTicker", "fetchTickers", "fetchFundingRate", "fetchFundingRates"):
            continue
        for case in cases:
            parsed = case["parsedResponse"]
            single = isinstance(parsed, dict) and "symbol" in parsed
            found += [parsed] if single else list(parsed.values())
    return found


@pytest.mark.parametrize("venue", ["binance", "bybit", "okx", "kucoinfutures"])
def test_no_recorded_real_payload_is_refused(venue):
    responses = json.loads(shared_dir("realdata", venue, "responses.json").read_text())
    items = _items(responses)
    assert items
    assert [raw_defect(item) for item in items] == [None] * len(items)


@pytest.fixture
def markets():
    recorded = json.loads(shared_dir("realdata", "bybit", "markets.json").read_text())
    return select_markets(recorded, ())


async def test_a_symbol_repeated_in_a_bulk_response_is_refused_not_stored_last_wins(markets):
    venue = ExchangeConfig(id="bybit", api_url="http://127.0.0.1:9/bybit")
    linear = sorted(s for s in markets if not markets[s]["inverse"])
    twice = linear[1]

    async with RunScope():
        async with exchange_client(venue) as client:
            client.set_markets(markets)
            real_parse = client.parse_tickers

            async def fetch_tickers(symbols=None, params=None):
                rows = [{"symbol": markets[s]["id"], "lastPrice": "1.5", "bid1Price": "1.4",
                         "ask1Price": "1.6"} for s in symbols]
                rows.append({"symbol": markets[twice]["id"], "lastPrice": "999999"})
                client.last_json_response = {"retCode": 0, "result": {"list": rows}}
                return real_parse(rows, symbols)

            client.fetch_tickers = fetch_tickers
        fetched = await snapshots.fetch_snapshots(
            venue, "tickers", {s: markets[s] for s in linear}, 0)
    assert twice not in fetched.items and set(fetched.items) == set(linear) - {twice}
    ((payload, symbol, reason),) = fetched.unparsed
    assert symbol == twice and reason.startswith("symbol repeated in one response: 2 rows")
    assert [row["lastPrice"] for row in payload["rows"]] == ["1.5", "999999"]
    batch = ticker_rows("bybit", fetched.items, linear, NOW, "r", fetched.unparsed)
    assert batch.requested == len(linear) == len(batch.rows) + len(batch.quarantine)
    assert all(row["last"] != 999999 for row in batch.rows)
