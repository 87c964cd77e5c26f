"""ccxt's recorded fixtures (../shared/realdata) replayed through ccxt, normalize and the store.

Each recorded raw body is handed to the installed ccxt in place of the HTTP response; ccxt parses
it, the project normalizes and stores it (SQLite file and PostgreSQL), and the stored values must
equal what ccxt parsed. ccxt's own recorded ``parsedResponse`` is checked too, on the fields the
project stores, except where PROVENANCE.md documents that ccxt 4.5.90 parses differently.
"""

from __future__ import annotations

import copy
import json
import re
import time

import ccxt.async_support as ccxt_async
import pytest
from sqlalchemy import select

from perpflow.normalize import funding_rate_rows, ms_to_datetime, ticker_rows
from perpflow.store import LedgerEntry, funding_rates, store_batch, tickers
from tests.conftest import shared_dir

VENUES = ("binance", "bybit", "okx", "kucoinfutures")
METHODS = {
    "fetchTicker": "tickers",
    "fetchTickers": "tickers",
    "fetchFundingRate": "funding_rates",
    "fetchFundingRates": "funding_rates",
}
# ccxt 4.5.90 no longer parses these fields as the (older) recorded parsedResponse did.
KNOWN_PARSER_CHANGES = {("kucoinfutures", "fetchFundingRate"): {"fundingTimestamp", "nextFundingRate"}}
TICKER_FIELDS = {
    "bid": "bid",
    "ask": "ask",
    "last": "last",
    "mark_price": "markPrice",
    "index_price": "indexPrice",
    "base_volume": "baseVolume",
    "quote_volume": "quoteVolume",
}
FUNDING_FIELDS = {
    "funding_rate": "fundingRate",
    "next_funding_rate": "nextFundingRate",
    "mark_price": "markPrice",
    "index_price": "indexPrice",
}
FUNDING_TIMES = {"funding_ts": "fundingTimestamp", "next_funding_ts": "nextFundingTimestamp"}


def _cases():
    root = shared_dir("realdata")
    for venue in VENUES:
        recorded = json.loads((root / venue / "responses.json").read_text())
        markets = json.loads((root / venue / "markets.json").read_text())
        for method, cases in recorded["methods"].items():
            for case in cases if method in METHODS else ():
                if not any(key.startswith("disabled") for key in case):
                    yield venue, recorded.get("options") or {}, markets, case


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


async def _replay(venue: str, options: dict, markets: dict, case: dict):
    client = getattr(ccxt_async, venue)({"options": copy.deepcopy(options)})
    client.set_markets(list(markets.values()))

    async def recorded_fetch(url, method="GET", headers=None, body=None):
        return copy.deepcopy(case["httpResponse"])

    client.fetch = recorded_fetch
    try:
        return await getattr(client, _snake(case["method"]))(*copy.deepcopy(case["input"]))
    finally:
        await client.close()


def _as_dict(method: str, parsed) -> dict:
    return parsed if method.endswith("s") else {parsed["symbol"]: parsed}


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        try:
            cases = list(_cases())
        except pytest.skip.Exception:
            cases = []
        ids = [f"{venue}-{case['method']}-{case['description']}" for venue, _, _, case in cases]
        metafunc.parametrize("case", cases or [None], ids=ids or ["no-shared"])


async def test_replayed_fixture_is_stored_as_ccxt_parses(case, engine):
    if case is None:
        shared_dir("realdata")
    venue, options, markets, recorded = case
    parsed = _as_dict(recorded["method"], await _replay(venue, options, markets, recorded))
    dataset = METHODS[recorded["method"]]
    symbols = sorted(parsed)
    received = int(time.time() * 1000)
    if dataset == "tickers":
        batch, table, fields = ticker_rows(venue, parsed, symbols, received, "replay"), tickers, TICKER_FIELDS
    else:
        batch = funding_rate_rows(venue, parsed, symbols, received, "replay", max_abs_rate=0.05)
        table, fields = funding_rates, {**FUNDING_FIELDS, **FUNDING_TIMES}
    assert batch.quarantine == [], batch.quarantine
    now = ms_to_datetime(received)
    entry = LedgerEntry("replay", venue, dataset, "ok", now, now)
    result = await store_batch(engine, table, batch, entry)
    assert (result.stored, result.duplicates) == (len(symbols), 0)

    async with engine.connect() as conn:
        stored = {row.symbol: row for row in (await conn.execute(select(table))).all()}
    assert sorted(stored) == symbols
    skipped = KNOWN_PARSER_CHANGES.get((venue, recorded["method"]), set())
    expected = _as_dict(recorded["method"], recorded["parsedResponse"])
    for symbol, item in parsed.items():
        row = stored[symbol]
        for column, key in fields.items():
            value = getattr(row, column)
            want = ms_to_datetime(item[key]) if key in FUNDING_TIMES.values() and item[key] else item[key]
            assert value == want, (symbol, column, value, want)
            if key not in skipped:
                assert item[key] == expected[symbol].get(key), (symbol, key, "differs from ccxt's fixture")
        assert row.ts == ms_to_datetime(item["timestamp"] or received)
        assert row.ts_source == ("exchange" if item["timestamp"] else "received")
        if dataset == "funding_rates":
            assert row.interval_hours == _hours(item.get("interval"))


def _hours(interval):
    return None if interval is None else float(interval.rstrip("h"))
