"""Recorded venues (../shared/realdata-http) replayed to unmodified ccxt, as PROVENANCE.md says."""

from __future__ import annotations

import ccxt.async_support as ccxt
import pytest

from perpflow.emulator import EmulatorServer, RecordedVenue

from .helpers import ccxt_client, shared_dir


def history(rows: list[dict]) -> list[tuple]:
    return [(row["timestamp"], row["fundingRate"]) for row in rows]


async def test_binanceusdm_recording():
    async with EmulatorServer([RecordedVenue(shared_dir("binanceusdm"))]) as srv, \
            ccxt_client(srv, "binanceusdm") as ex:
        markets = await ex.load_markets()
        assert set(markets) == {"BTC/USDT:USDT", "ETH/USDT:USDT", "BTC/USDT:USDT-220325"}
        ticker = await ex.fetch_ticker("BTC/USDT:USDT")
        assert (ticker["last"], ticker["timestamp"]) == (4.000002, 1499869899040)
        rate = await ex.fetch_funding_rate("BTC/USDT:USDT")
        assert (rate["fundingRate"], rate["fundingTimestamp"], rate["markPrice"]) == (
            0.00038246, 1597392000000, 11793.63104562)
        assert history(await ex.fetch_funding_rate_history("BTC/USDT:USDT")) == [
            (1570608000000, -0.0375), (1570636800000, 0.0001)]
        book = (await ex.fetch_bids_asks(["BTC/USDT:USDT"]))["BTC/USDT:USDT"]
        assert (book["bid"], book["ask"]) == (4.0, 4.000002)
        # only single-symbol docs examples are recorded: the array forms are 404s
        for call in (ex.fetch_tickers, ex.fetch_funding_rates, ex.fetch_time):
            with pytest.raises(ccxt.ExchangeNotAvailable, match="404"):
                await call()


async def test_bybit_recording_needs_its_ccxt_config():
    async with EmulatorServer([RecordedVenue(shared_dir("bybit"))]) as srv:
        assert srv.ccxt_config("bybit")["options"]["fetchMarkets"]["usePrivateInstrumentsInfo"]
        async with ccxt_client(srv, "bybit") as ex:
            markets = await ex.load_markets()
            assert set(markets) == {"BTC/USDT:USDT", "ETH/USDT:USDT"}
            assert markets["BTC/USDT:USDT"]["linear"] is False  # the body has no category
            tickers = await ex.fetch_tickers()
            assert (tickers["BTC/USDT:USDT"]["last"], tickers["BTC/USDT:USDT"]["timestamp"]) == (
                16597.0, None)
            rate = (await ex.fetch_funding_rates())["BTC/USDT:USDT"]
            assert (rate["fundingRate"], rate["fundingTimestamp"], rate["timestamp"]) == (
                -0.001034, 1672387200000, 1672376496682)
            assert history(await ex.fetch_funding_rate_history("BTC/USDT:USDT")) == [
                (1709856000000, 0.00015), (1709884800000, 0.0001)]
            with pytest.raises(ccxt.ExchangeError, match="retCode"):
                await ex.fetch_time()
        assert srv.requests.count("bybit", "/v5/market/instruments-info") == 1  # one signed call


async def test_okx_recording():
    async with EmulatorServer([RecordedVenue(shared_dir("okx"))]) as srv, \
            ccxt_client(srv, "okx") as ex:
        markets = await ex.load_markets()
        assert set(markets) == {"BTC/USD:BTC", "ETH/USDT:USDT", "BTC/USDT:USDT"}
        assert markets["BTC/USD:BTC"]["inverse"] is True
        # ccxt reports realizedRate as the fundingRate
        assert history(await ex.fetch_funding_rate_history("BTC/USDT:USDT")) == [
            (1704038400000, -0.00002), (1704067200000, 0.00015)]
        with pytest.raises(ccxt.ExchangeError, match='"code":"404"'):
            await ex.fetch_tickers(["BTC/USDT:USDT"])


async def test_dydx_recording_under_its_own_name():
    async with EmulatorServer([RecordedVenue(shared_dir("dydx"), name="dydx-replay")]) as srv, \
            ccxt_client(srv, "dydx-replay", "dydx") as ex:
        markets = await ex.load_markets()
        assert len(markets) == 125 and markets["BTC/USDC:USDC"]["id"] == "BTC-USD"
        assert history(await ex.fetch_funding_rate_history("BTC/USDC:USDC")) == [
            (1765202400112, 6.25e-07), (1765206000586, 3.75e-07), (1765209600219, 2.375e-06)]
        with pytest.raises(ccxt.ExchangeNotAvailable, match="404"):
            await ex.fetch_funding_rate_history("ETH/USDC:USDC")
    assert srv.requests.count("dydx-replay", "/v4/historicalFunding/ETH-USD") == 1


def test_recorded_queries_match_exactly_except_ignored_names():
    venue = RecordedVenue(shared_dir("bybit"))
    path = "/v5/market/funding/history"
    assert venue.handle("GET", path, {"category": "linear", "symbol": "BTCUSDT",
                                      "limit": "7"}).status == 200
    assert venue.handle("GET", path, {"category": "linear", "symbol": "ETHUSDT"}).status == 404
    assert venue.handle("GET", path, {"category": "linear", "symbol": "BTCUSDT",
                                      "startTime": "1"}).status == 404
    assert venue.url_overrides["public"] == "{base}"
