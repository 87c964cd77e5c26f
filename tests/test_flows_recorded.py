"""Both flows against the emulator replaying real recorded REST bodies (../shared/realdata-http).

The recordings are small and partial (PROVENANCE.md): routes without a body answer 404, so some
steps fail by design. What was recorded must be stored exactly as ccxt parses it, what was not must
show as failed ledger rows, and the runs must end Failed.
"""

from __future__ import annotations

import ccxt.async_support as ccxt_async
import pytest

from flows.collect_tickers import collect_tickers
from flows.common import VenueStepsFailed
from flows.sweep_funding_rates import sweep_funding_rates
from perpflow.emulator import EmulatorServer, RecordedVenue
from perpflow.exchanges import rewrite_api_urls
from perpflow.store import collection_ledger, funding_rates, instruments, quarantine, tickers
from tests.conftest import shared_dir
from tests.test_flows import configure, fetch_all

pytestmark = pytest.mark.usefixtures("prefect_server")

VENUES = ("binanceusdm", "bybit", "okx")
BTC = "BTC/USDT:USDT"


@pytest.fixture
def recorded_market():
    root = shared_dir("realdata-http")
    with EmulatorServer([RecordedVenue(root / name) for name in VENUES]).running_in_thread() as server:
        yield server


async def _ccxt(server, name):
    client = getattr(ccxt_async, name)({**server.ccxt_config(name), "enableRateLimit": False})
    client.urls["api"] = rewrite_api_urls(client.urls["api"], server.venue_base_url(name))
    await client.load_markets()
    return client


async def test_recorded_payloads_are_stored_as_ccxt_parses_them(recorded_market, database_url, monkeypatch):
    server = recorded_market
    configure(monkeypatch, database_url, server, VENUES, binanceusdm={"symbols": [BTC]})
    # binance: only single-symbol bodies are recorded; bybit: one bulk body holds BTC only.
    monkeypatch.setenv("PERPFLOW_PER_SYMBOL_MAX", "1")
    ticks = await collect_tickers(return_state=True)
    sweep = await sweep_funding_rates(return_state=True)
    assert ticks.is_failed() and sweep.is_failed()
    with pytest.raises(VenueStepsFailed, match="okx tickers"):
        await ticks.result()

    ledger = {(r.exchange, r.dataset): r for r in await fetch_all(database_url, collection_ledger)}
    assert {key for key, row in ledger.items() if row.status == "ok"} == {
        ("binanceusdm", "tickers"),
        ("bybit", "tickers"),
        ("binanceusdm", "funding_rates"),
        ("bybit", "funding_rates"),
    }
    bybit = ledger[("bybit", "tickers")]
    assert (bybit.requested, bybit.stored, bybit.quarantined) == (2, 1, 1)  # ETH has no recorded row
    assert {r.symbol for r in await fetch_all(database_url, quarantine)} == {"ETH/USDT:USDT"}
    found = {(r.exchange, r.symbol) for r in await fetch_all(database_url, instruments)}
    assert found == {("binanceusdm", BTC), ("bybit", BTC), ("bybit", "ETH/USDT:USDT"),
                     ("okx", BTC), ("okx", "ETH/USDT:USDT"), ("okx", "BTC/USD:BTC")}
    okx = ledger[("okx", "tickers")]  # no recorded ticker body: every symbol failed
    assert (okx.status, okx.requested, okx.failed) == ("failed", 3, 3)
    assert set(okx.failed_symbols) == {BTC, "ETH/USDT:USDT", "BTC/USD:BTC"}

    stored_tickers = {(r.exchange, r.symbol): r for r in await fetch_all(database_url, tickers)}
    stored_rates = {(r.exchange, r.symbol): r for r in await fetch_all(database_url, funding_rates)}
    assert set(stored_tickers) == set(stored_rates) == {("binanceusdm", BTC), ("bybit", BTC)}
    for name in ("binanceusdm", "bybit"):
        client = await _ccxt(server, name)
        try:
            ticker = await client.fetch_ticker(BTC)
            rate = await client.fetch_funding_rate(BTC) if name == "binanceusdm" else (
                await client.fetch_funding_rates([BTC]))[BTC]
            book = (await client.fetch_bids_asks([BTC]))[BTC] if name == "binanceusdm" else ticker
        finally:
            await client.close()
        row = stored_tickers[(name, BTC)]
        assert (row.last, row.base_volume, row.quote_volume) == (
            ticker["last"], ticker["baseVolume"], ticker["quoteVolume"])
        assert (row.bid, row.ask) == (book["bid"], book["ask"])
        assert row.ts_source == ("exchange" if ticker["timestamp"] else "received")
        stored_rate = stored_rates[(name, BTC)]
        assert (stored_rate.funding_rate, stored_rate.mark_price, stored_rate.index_price) == (
            rate["fundingRate"], rate["markPrice"], rate["indexPrice"])
