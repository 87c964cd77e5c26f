"""Generated venues through unmodified ccxt over HTTP: markets, tickers, funding rates."""

from __future__ import annotations


import ccxt.async_support as ccxt
import pytest

from perpflow.emulator import EmulatorServer, GeneratedVenue

from .helpers import FORMATS, HOUR_MS, NOW_MS, ccxt_client, fixed_clock

N = 12
PERPS = ["BTC/USDT:USDT", "ETH/USDT:USDT"] + [f"C{i:03d}/USDT:USDT" for i in range(1, N - 1)]
NON_USDT_PERPS = {
    "binanceusdm": {"BTC/USDC:USDC"},
    "bybit": {"BTC/USDC:USDC"},
    "okx": {"BTC/USD:BTC", "ETH/USD:ETH", "BTC/USDC:USDC"},
}
FUTURES = {"binanceusdm": 2, "bybit": 2, "okx": 0}
CAPS = {"binanceusdm": 0.03, "bybit": 0.02, "okx": 0.015}


@pytest.fixture
async def server():
    venues = [GeneratedVenue(fmt, symbols=N, seed=3, now_ms=fixed_clock) for fmt in FORMATS]
    async with EmulatorServer(venues) as srv:
        yield srv


@pytest.mark.parametrize("fmt", FORMATS)
async def test_load_markets_lists_perpetuals_and_a_few_others(server, fmt):
    async with ccxt_client(server, fmt) as ex:
        markets = await ex.load_markets()
    usdt_perps = [s for s, m in markets.items()
                  if m["swap"] and m["linear"] and m["settle"] == "USDT" and m["active"]]
    assert sorted(usdt_perps) == sorted(PERPS)
    for symbol in PERPS:
        market = markets[symbol]
        assert (market["type"], market["contract"], market["inverse"]) == ("swap", True, False)
        assert market["id"] == server.venues[fmt].market_ids[PERPS.index(symbol)]
    others = set(markets) - set(PERPS)
    assert NON_USDT_PERPS[fmt] <= others
    assert sum(markets[s]["future"] for s in others) == FUTURES[fmt]
    if fmt == "okx":
        assert markets["BTC/USD:BTC"]["inverse"] is True
    if fmt == "bybit":  # the PreLaunch listing comes from ccxt's extra status=PreLaunch request
        assert markets["P001/USDT:USDT"]["active"] is False
        assert server.requests.count("bybit", "/v5/market/instruments-info") == 2


@pytest.mark.parametrize("fmt", FORMATS)
async def test_fetch_tickers(server, fmt):
    async with ccxt_client(server, fmt) as ex:
        await ex.load_markets()
        tickers = await ex.fetch_tickers(PERPS)
        if fmt == "binanceusdm":  # /fapi/v1/ticker/24hr has no book prices: bookTicker has
            books = await ex.fetch_bids_asks(PERPS)
            assert all(books[s]["timestamp"] == NOW_MS for s in PERPS)
            for symbol in PERPS:
                tickers[symbol].update({k: books[symbol][k] for k in ("bid", "ask")})
    assert set(tickers) == set(PERPS)
    for symbol in PERPS:
        t = tickers[symbol]
        assert 0 < t["bid"] < t["ask"]
        assert t["bid"] <= t["last"] <= t["ask"]
        assert t["baseVolume"] > 0
        assert t["timestamp"] == {"binanceusdm": NOW_MS, "bybit": None, "okx": NOW_MS}[fmt]
    if fmt == "bybit":
        mark, index = tickers["BTC/USDT:USDT"]["markPrice"], tickers["BTC/USDT:USDT"]["indexPrice"]
        assert abs(mark / index - 1) < 0.001
    assert 30_000 < tickers["BTC/USDT:USDT"]["last"] < 150_000


@pytest.mark.parametrize("fmt", FORMATS)
async def test_fetch_funding_rates(server, fmt):
    async with ccxt_client(server, fmt) as ex:
        await ex.load_markets()
        rates = await ex.fetch_funding_rates(PERPS)
        tickers = await ex.fetch_tickers(PERPS)
        intervals = (await ex.fetch_funding_intervals(PERPS)) if fmt == "binanceusdm" else {}
    venue = server.venues[fmt]
    for position, symbol in enumerate(PERPS):
        rate, inst = rates[symbol], venue.market.instruments[position]
        step = inst.interval_h * HOUR_MS
        assert abs(rate["fundingRate"]) <= CAPS[fmt]
        assert rate["fundingRate"] == venue.market.current_funding_rate(inst, NOW_MS)
        assert rate["fundingTimestamp"] % step == 0
        assert 0 < rate["fundingTimestamp"] - NOW_MS <= step
        if fmt == "binanceusdm":
            assert rate["interval"] is None  # premiumIndex has no interval: fundingInfo has
            expected = None if inst.interval_h == 8 else f"{inst.interval_h}h"
            assert (intervals.get(symbol) or {}).get("interval") == expected
        else:
            assert rate["interval"] == f"{inst.interval_h}h"
        if fmt == "okx":
            assert rate["nextFundingTimestamp"] == rate["fundingTimestamp"] + step
        else:
            last = tickers[symbol]["last"]
            assert abs(rate["markPrice"] / last - 1) < 0.001
            assert abs(rate["indexPrice"] / last - 1) < 0.001
            assert rate["timestamp"] == NOW_MS
    if fmt == "binanceusdm":  # fundingInfo lists exactly the non-8h perpetuals
        assert {s for s in intervals if s in PERPS} == {
            s for s, inst in zip(PERPS, venue.market.instruments) if inst.interval_h != 8}
        assert intervals


async def test_intervals_mostly_8h_some_shorter():
    venue = GeneratedVenue("bybit", symbols=300, now_ms=fixed_clock)
    hours = [i.interval_h for i in venue.market.instruments if i.is_usdt_perpetual]
    assert hours.count(8) > 0.6 * len(hours)
    assert 0 < hours.count(4) < 0.3 * len(hours) and 0 < hours.count(1) < 0.2 * len(hours)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_single_symbol_forms_and_time(server, fmt):
    async with ccxt_client(server, fmt) as ex:
        await ex.load_markets()
        ticker = await ex.fetch_ticker("ETH/USDT:USDT")
        rate = await ex.fetch_funding_rate("ETH/USDT:USDT")
        assert await ex.fetch_time() == NOW_MS
        everything = await ex.fetch_tickers(PERPS)
        with pytest.raises(ccxt.BadSymbol):  # the venue's own error for an unknown id
            await ex.fetch_ticker("ETH/USDT:USDT", params={
                "symbol": "NOPEUSDT", "instId": "NOPE-USDT-SWAP"})
    assert ticker["last"] == everything["ETH/USDT:USDT"]["last"]
    assert rate["symbol"] == "ETH/USDT:USDT" and rate["fundingRate"] is not None


async def test_prices_move_with_the_clock_but_repeat_for_the_same_time():
    clock = [NOW_MS]
    async with EmulatorServer([GeneratedVenue("okx", symbols=3, now_ms=lambda: clock[0])]) as srv:
        async with ccxt_client(srv, "okx") as ex:
            await ex.load_markets()
            first = (await ex.fetch_ticker("BTC/USDT:USDT"))["last"]
            again = (await ex.fetch_ticker("BTC/USDT:USDT"))["last"]
            clock[0] += 6 * HOUR_MS
            later = (await ex.fetch_ticker("BTC/USDT:USDT"))["last"]
    assert first == again != later
    assert abs(later / first - 1) < 0.2


async def test_tickers_of_300_symbols_in_every_format():
    """A tickers body lists every one of 300 symbols (its cost is measured by the benchmarks)."""
    for fmt, path, query in [("binanceusdm", "/fapi/v1/ticker/24hr", {}),
                             ("bybit", "/v5/market/tickers", {"category": "linear"}),
                             ("okx", "/api/v5/market/tickers", {"instType": "SWAP"})]:
        reply = GeneratedVenue(fmt, symbols=300).handle("GET", path, query)
        assert reply.status == 200 and reply.body.count(b"USDT") >= 300
