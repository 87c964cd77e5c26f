"""Five more generated venues through unmodified ccxt over HTTP: hyperliquid (POST /info, hourly,
USDC), kucoinfutures (multipliers, USDT/USDC/coin-settled), binancecoinm (inverse only),
cryptocom (USD, hourly, no bulk funding call) and phemex (USDT and inverse, no bulk funding)."""

from __future__ import annotations

import json

import aiohttp
import ccxt.async_support as ccxt
import pytest

from perpflow.emulator import EmulatorServer, GeneratedVenue
from perpflow.emulator.formats.binancecoinm import contract_usd
from perpflow.emulator.formats.kucoinfutures import multiplier
from perpflow.emulator.market import PERPETUAL, Instrument

from .helpers import HOUR_MS, NOW_MS, ccxt_client, fixed_clock

N = 8
DAY_MS = 24 * HOUR_MS
LISTED_MS = NOW_MS - NOW_MS % DAY_MS - 60 * DAY_MS
VENUES = ("hyperliquid", "kucoinfutures", "binancecoinm", "cryptocom", "phemex")
CONTRACT_SIZE = {
    "hyperliquid": lambda inst: 1,
    "kucoinfutures": lambda inst: abs(multiplier(inst)),
    "binancecoinm": contract_usd,
    "cryptocom": lambda inst: 1,
    "phemex": lambda inst: 1,
}
PAGE_CAP = {"hyperliquid": 500, "kucoinfutures": 100, "binancecoinm": 1000, "cryptocom": 300,
            "phemex": 100}
# venues whose ccxt has no all-symbol funding call: one request per symbol
PER_SYMBOL_FUNDING = {"cryptocom", "phemex"}


def generated(fmt: str, now_ms=fixed_clock) -> GeneratedVenue:
    return GeneratedVenue(fmt, symbols=N, seed=3, now_ms=now_ms, listed_ms=LISTED_MS)


@pytest.fixture
async def server():
    async with EmulatorServer([generated(fmt) for fmt in VENUES]) as srv:
        yield srv


def perpetuals(venue: GeneratedVenue, linear_only: bool = False) -> list[Instrument]:
    return [inst for inst in venue.market.instruments
            if inst.kind == PERPETUAL and (inst.linear or not linear_only)]


@pytest.mark.parametrize("fmt", VENUES)
async def test_markets_have_the_instruments_units(server, fmt):
    venue = server.venues[fmt]
    async with ccxt_client(server, fmt) as ex:
        markets = await ex.load_markets()
    swaps = {symbol for symbol, market in markets.items() if market["swap"]}
    assert swaps == {inst.symbol for inst in perpetuals(venue)}
    for inst in venue.market.instruments:
        market = markets[inst.symbol]
        assert (market["base"], market["quote"], market["settle"]) == (
            inst.base, inst.quote, inst.settle)
        assert (market["linear"], market["inverse"]) == (inst.linear, inst.inverse)
        assert market["contractSize"] == CONTRACT_SIZE[fmt](inst)
        assert market["type"] == ("swap" if inst.kind == PERPETUAL else "future")
        assert market["active"] is True
    assert len(markets) == len(venue.market.instruments)  # nothing but the venue's contracts


async def test_each_venue_covers_its_behaviour(server):
    """What each format stands for: inverse-only, hourly, USDC- and coin-settled, multipliers."""
    by_fmt = {fmt: server.venues[fmt].market.instruments for fmt in VENUES}
    assert all(inst.inverse for inst in by_fmt["binancecoinm"])
    assert {inst.interval_h for inst in by_fmt["binancecoinm"] if inst.kind == PERPETUAL} == {8}
    assert {inst.interval_h for inst in by_fmt["hyperliquid"]} == {1}
    assert {inst.settle for inst in by_fmt["hyperliquid"]} == {"USDC"}
    assert {inst.interval_h for inst in by_fmt["cryptocom"] if inst.kind == PERPETUAL} == {1}
    kucoin_settles = {inst.settle for inst in by_fmt["kucoinfutures"]}
    assert {"USDT", "USDC", "BTC", "ETH"} <= kucoin_settles
    assert {multiplier(inst) for inst in by_fmt["kucoinfutures"]} >= {0.001, 0.01, -1.0}
    assert any(inst.inverse for inst in by_fmt["phemex"])
    for fmt in PER_SYMBOL_FUNDING:
        async with ccxt_client(server, fmt) as ex:
            assert ex.has["fetchFundingRates"] is False


def assert_ticker(fmt: str, ticker: dict, venue: GeneratedVenue, inst: Instrument) -> None:
    """The parsed ticker against the synthetic market at ``NOW_MS`` (quote currency)."""
    q = venue.market.quote(inst, NOW_MS)
    assert ticker["symbol"] == inst.symbol
    if fmt == "hyperliquid":  # 5 significant figures, at most 6 decimals; impact prices outwards
        assert ticker["last"] == pytest.approx((q.bid + q.ask) / 2, rel=1e-4, abs=5e-7)
        assert ticker["bid"] <= q.bid < q.ask <= ticker["ask"]
        assert ticker["bid"] == pytest.approx(q.bid, rel=1e-4, abs=1e-6)
        assert ticker["quoteVolume"] == round(q.quote_volume, 2)
        assert ticker["timestamp"] is None
        return
    assert ticker["last"] == pytest.approx(q.last, rel=1e-12)
    if ticker["bid"] is not None:
        assert (ticker["bid"], ticker["ask"]) == (pytest.approx(q.bid, rel=1e-12),
                                                  pytest.approx(q.ask, rel=1e-12))


@pytest.mark.parametrize("fmt", VENUES)
async def test_tickers_bulk_and_single(server, fmt):
    venue = server.venues[fmt]
    insts = perpetuals(venue, linear_only=fmt != "binancecoinm")
    symbols = [inst.symbol for inst in insts]
    async with ccxt_client(server, fmt) as ex:
        await ex.load_markets()
        if fmt == "cryptocom":  # ccxt refuses more than one symbol; without symbols: all
            with pytest.raises(ccxt.BadRequest):
                await ex.fetch_tickers(symbols)
            tickers = await ex.fetch_tickers()
        else:
            tickers = await ex.fetch_tickers(symbols)
        single = await ex.fetch_ticker(symbols[1])
        books = (await ex.fetch_bids_asks(symbols)
                 if fmt in ("kucoinfutures", "binancecoinm") else {})
    for inst in insts:
        assert_ticker(fmt, tickers[inst.symbol], venue, inst)
        if books:  # the bulk tickers lack book prices: bookTicker / allTickers have them
            assert books[inst.symbol]["timestamp"] == NOW_MS
            assert_ticker(fmt, {**tickers[inst.symbol], **{k: books[inst.symbol][k]
                                                          for k in ("bid", "ask")}}, venue, inst)
    assert_ticker(fmt, single, venue, insts[1])
    expected_ts = {"hyperliquid": None, "kucoinfutures": None}.get(fmt, NOW_MS)
    assert {t["timestamp"] for s, t in tickers.items() if s in symbols} == {expected_ts}
    if fmt == "kucoinfutures":  # contracts/active: mark and index, volume in base coin
        q = venue.market.quote(insts[0], NOW_MS)
        btc = tickers[insts[0].symbol]
        assert btc["markPrice"] == round(q.mark, insts[0].price_decimals)
        assert btc["baseVolume"] == round(q.base_volume, 8)
        assert single["timestamp"] == NOW_MS  # /api/v1/ticker: ts in ns
    if fmt in ("cryptocom", "binancecoinm"):
        q = venue.market.quote(insts[0], NOW_MS)
        assert tickers[insts[0].symbol]["quoteVolume"] == pytest.approx(q.quote_volume, rel=1e-6)


async def test_phemex_inverse_ticker_is_scaled_back_to_prices(server):
    venue = server.venues["phemex"]
    inst = next(inst for inst in venue.market.instruments if inst.inverse)
    async with ccxt_client(server, "phemex") as ex:
        await ex.load_markets()
        ticker = await ex.fetch_ticker(inst.symbol)
        rate = await ex.fetch_funding_rate(inst.symbol)
    assert_ticker("phemex", ticker, venue, inst)
    assert ticker["bid"] is not None  # the v1 ticker has bidEp/askEp, the v2 one no book
    # ccxt 4.5.90 returns the inverse contract's rate as the text of fundingRateEr / 10^8
    assert isinstance(rate["fundingRate"], str)
    assert float(rate["fundingRate"]) == venue.market.current_funding_rate(inst, NOW_MS)


@pytest.mark.parametrize("fmt", VENUES)
async def test_current_funding(server, fmt):
    venue = server.venues[fmt]
    insts = perpetuals(venue, linear_only=fmt != "binancecoinm")
    symbols = [inst.symbol for inst in insts]
    async with ccxt_client(server, fmt) as ex:
        await ex.load_markets()
        if fmt in PER_SYMBOL_FUNDING:
            rates = {symbol: await ex.fetch_funding_rate(symbol) for symbol in symbols}
        else:
            rates = await ex.fetch_funding_rates(symbols)
        intervals = (await ex.fetch_funding_intervals(symbols)) if fmt == "binancecoinm" else {}
    for inst in insts:
        rate, step = rates[inst.symbol], inst.interval_ms
        assert rate["fundingRate"] == venue.market.current_funding_rate(inst, NOW_MS)
        if fmt == "phemex":  # the 24h ticker carries the rate, no settlement time or interval
            assert (rate["fundingTimestamp"], rate["interval"]) == (None, None)
            assert rate["nextFundingRate"] == venue.market.funding_rate(
                inst, venue.market.next_funding_ms(inst, NOW_MS) + step)
            continue
        assert rate["fundingTimestamp"] % step == 0
        if fmt == "hyperliquid":  # ccxt derives the next hour from its own clock
            assert rate["interval"] == "1h"
            continue
        assert 0 < rate["fundingTimestamp"] - NOW_MS <= step
        expected = None if fmt == "binancecoinm" else f"{inst.interval_h}h"
        assert rate["interval"] == expected
    if fmt == "binancecoinm":  # fundingInfo lists only non-8h contracts: none on COIN-M
        assert intervals == {}
    if fmt == "kucoinfutures":  # the UTA list's newGranularityStartTime: a past time
        first = rates[symbols[0]]
        assert first["nextFundingTimestamp"] == LISTED_MS
    if fmt in PER_SYMBOL_FUNDING:
        path = {"cryptocom": "/exchange/v1/public/get-valuations",
                "phemex": "/md/v2/ticker/24hr"}[fmt]
        assert server.requests.count(fmt, path) == len(symbols)


async def walk_forward(server: EmulatorServer, fmt: str, inst: Instrument) -> list[list]:
    """Every page from the listing to now in windows of page cap x interval, ccxt's ``until``
    as the inclusive upper bound."""
    pages, cap, step = [], PAGE_CAP[fmt], inst.interval_ms
    async with ccxt_client(server, fmt) as ex:
        await ex.load_markets()
        cursor = LISTED_MS
        while cursor <= NOW_MS:
            window_end = cursor + cap * step - 1
            page = await ex.fetch_funding_rate_history(inst.symbol, cursor, cap,
                                                       {"until": window_end})
            pages.append([(row["timestamp"], row["fundingRate"]) for row in page])
            cursor = window_end + 1
    return pages


@pytest.mark.parametrize("fmt", VENUES)
async def test_history_walk_yields_every_settlement_once(server, fmt):
    venue = server.venues[fmt]
    candidates = perpetuals(venue, linear_only=fmt != "binancecoinm")
    inst = min(candidates, key=lambda i: (i.interval_h, candidates.index(i)))
    pages = await walk_forward(server, fmt, inst)
    rows = [row for page in pages for row in page]
    assert [t for t, _ in rows] == list(range(LISTED_MS, NOW_MS + 1, inst.interval_ms))
    assert [rate for _, rate in rows] == [venue.market.funding_rate(inst, t) for t, _ in rows]
    assert all(0 < len(page) <= PAGE_CAP[fmt] for page in pages[:-1])


WIRE_HISTORY = {  # path, request for the BTC-like first perpetual with an oversized limit
    "kucoinfutures": ("/api/v1/contract/funding-rates",
                      lambda mid: {"symbol": mid, "from": "0", "to": str(NOW_MS)}, "timepoint"),
    "binancecoinm": ("/dapi/v1/fundingRate", lambda mid: {"symbol": mid, "limit": "5000"},
                     "fundingTime"),
    "cryptocom": ("/exchange/v1/public/get-valuations",
                  lambda mid: {"instrument_name": mid, "valuation_type": "funding_hist",
                               "count": "5000", "start_ts": "0"}, "t"),
    "phemex": ("/api-data/public/data/funding-rate-history",
               lambda mid: {"symbol": f".{mid}FR8H", "limit": "5000"}, "fundingTime"),
}


def history_rows(fmt: str, body) -> list[dict]:
    if fmt in ("binancecoinm", "hyperliquid"):
        return body
    if fmt == "cryptocom":
        return body["result"]["data"]
    return body["data"]["rows"] if fmt == "phemex" else body["data"]


@pytest.mark.parametrize("fmt", VENUES)
async def test_history_page_cap_and_order_on_the_wire(server, fmt):
    venue = server.venues[fmt]
    inst = venue.market.instruments[0]
    base = server.venue_base_url(fmt)
    async with aiohttp.ClientSession() as http:
        if fmt == "hyperliquid":
            request = http.post(base + "/info", json={
                "type": "fundingHistory", "coin": venue.market_ids[0], "startTime": 0})
            time_field = "time"
        else:
            path, query, time_field = WIRE_HISTORY[fmt]
            request = http.get(base + path, params=query(venue.market_ids[0]))
        async with request as response:
            assert response.status == 200
            rows = history_rows(fmt, await response.json(content_type=None))
    times = [int(row[time_field]) for row in rows]
    available = (NOW_MS - LISTED_MS) // inst.interval_ms + 1
    assert len(times) == min(PAGE_CAP[fmt], available)
    if fmt in ("hyperliquid", "binancecoinm"):  # ascending, counted from the start
        assert times == sorted(times) and times[0] == LISTED_MS
    else:  # newest first, counted from the end
        assert times == sorted(times, reverse=True)
        assert times[0] == NOW_MS - NOW_MS % inst.interval_ms


UNKNOWN_SYMBOL = {  # a ccxt call on a valid symbol, with the venue id overridden
    "kucoinfutures": ("fetch_ticker", {"symbol": "NOPEUSDTM"}, ccxt.BadSymbol),
    "binancecoinm": ("fetch_ticker", {"symbol": "NOPEUSD_PERP"}, ccxt.BadSymbol),
    "cryptocom": ("fetch_ticker", {"instrument_name": "NOPEUSD-PERP"}, ccxt.BadSymbol),
    "phemex": ("fetch_ticker", {"symbol": "NOPEUSDT"}, ccxt.BadSymbol),
    "hyperliquid": ("fetch_funding_rate_history", {"coin": "NOPE"}, ccxt.ExchangeError),
}
UNSERVED = {  # an endpoint ccxt knows and the emulator does not serve
    "kucoinfutures": ("futuresPublicGetLevel2Snapshot", {"symbol": "XBTUSDTM"},
                      ccxt.NotSupported),
    "binancecoinm": ("dapiPublicGetDepth", {"symbol": "BTCUSD_PERP"}, ccxt.ExchangeNotAvailable),
    "cryptocom": ("v1PublicGetPublicGetBook", {"instrument_name": "BTCUSD-PERP"},
                  ccxt.ExchangeError),
    "phemex": ("v2GetMdV2Orderbook", {"symbol": "BTCUSDT"}, ccxt.ExchangeNotAvailable),
    "hyperliquid": ("publicPostInfo", {"type": "l2Book", "coin": "BTC"}, ccxt.ExchangeError),
}


@pytest.mark.parametrize("fmt", VENUES)
async def test_venue_errors_raise_ccxt_classes(server, fmt):
    symbol = perpetuals(server.venues[fmt])[0].symbol
    method, params, error = UNKNOWN_SYMBOL[fmt]
    unserved, unserved_params, unserved_error = UNSERVED[fmt]
    async with ccxt_client(server, fmt) as ex:
        await ex.load_markets()
        with pytest.raises(error) as raised:
            if method == "fetch_ticker":
                await ex.fetch_ticker(symbol, params)
            else:
                await ex.fetch_funding_rate_history(symbol, NOW_MS - DAY_MS, None, params)
        assert type(raised.value) is error
        with pytest.raises(unserved_error) as raised:
            await getattr(ex, unserved)(unserved_params)
        assert type(raised.value) is unserved_error


async def test_hyperliquid_routes_by_body_and_refuses_bad_bodies(server):
    url = server.venue_base_url("hyperliquid") + "/info"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=b"{not json") as response:
            assert response.status == 422
            assert "deserialize" in await response.text()
        async with http.get(url) as response:
            assert response.status == 404
        async with http.post(url, json={"type": "exchangeStatus"}) as response:
            assert json.loads(await response.text())["time"] == str(NOW_MS)
    assert server.requests.count("hyperliquid", "/info") == 3


async def test_malformed_rows_reach_ccxt_in_the_new_formats():
    """The quarantine alterations apply to the new formats' ticker rows too."""
    for fmt, bulk in (("kucoinfutures", True), ("phemex", True), ("cryptocom", False)):
        bad = GeneratedVenue(fmt, symbols=4, seed=3, now_ms=fixed_clock,
                             malformed={0: "negative_price"}, drop_tickers=0.0)
        async with EmulatorServer([bad]) as srv, ccxt_client(srv, fmt) as ex:
            await ex.load_markets()
            symbol = bad.market.instruments[0].symbol
            ticker = (await ex.fetch_tickers([symbol]))[symbol] if bulk \
                else await ex.fetch_ticker(symbol)
        assert ticker["last"] < 0
    hl = GeneratedVenue("hyperliquid", symbols=4, seed=3, now_ms=fixed_clock, drop_tickers=0.5)
    body = json.loads(hl.handle("POST", "/info", {}, b'{"type":"metaAndAssetCtxs"}').body)
    assert len(body[0]["universe"]) == len(body[1]) < 4  # dropped from both aligned lists
