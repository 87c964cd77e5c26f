"""Funding history and list pagination with real venue semantics, through ccxt and raw HTTP."""

from __future__ import annotations

import aiohttp
import pytest

from perpflow.emulator import EmulatorServer, GeneratedVenue

from .helpers import FORMATS, HOUR_MS, NOW_MS, ccxt_client, fixed_clock

DAY_MS = 24 * HOUR_MS
LISTED_MS = NOW_MS - NOW_MS % DAY_MS - 60 * DAY_MS
PAGE_CAP = {"binanceusdm": 1000, "bybit": 200, "okx": 100}
HISTORY_PATH = {
    "binanceusdm": ("/fapi/v1/fundingRate", "symbol", "fundingTime"),
    "bybit": ("/v5/market/funding/history", "symbol", "fundingRateTimestamp"),
    "okx": ("/api/v5/public/funding-rate-history", "instId", "fundingTime"),
}


def venue(fmt: str, **kwargs) -> GeneratedVenue:
    return GeneratedVenue(fmt, symbols=40, seed=11, now_ms=fixed_clock, listed_ms=LISTED_MS,
                          **kwargs)


def upper_bound(fmt: str, window_end_ms: int) -> dict:
    """How the product bounds a page: ccxt's ``until`` (inclusive), okx's raw ``after``
    (exclusive)."""
    return {"after": window_end_ms + 1} if fmt == "okx" else {"until": window_end_ms}


async def walk_forward(server: EmulatorServer, fmt: str, symbol: str, step_ms: int) -> list:
    """Every page from the listing to now, windows of page-cap x interval."""
    pages = []
    async with ccxt_client(server, fmt) as ex:
        await ex.load_markets()
        cursor = LISTED_MS
        while cursor <= NOW_MS:
            window_end = cursor + PAGE_CAP[fmt] * step_ms - 1
            page = await ex.fetch_funding_rate_history(
                symbol, cursor, PAGE_CAP[fmt], upper_bound(fmt, window_end))
            pages.append([(row["timestamp"], row["fundingRate"]) for row in page])
            cursor = window_end + 1
    return pages


@pytest.mark.parametrize("fmt", FORMATS)
async def test_walking_forward_yields_every_settlement_once_identically_on_two_servers(fmt):
    async with EmulatorServer([venue(fmt)]) as first, EmulatorServer([venue(fmt)]) as second:
        market = first.venues[fmt].market
        hourly = next(i for i in market.instruments if i.interval_h == 1 and i.is_usdt_perpetual)
        for inst in (market.instruments[0], hourly):
            step = inst.interval_h * HOUR_MS
            pages = await walk_forward(first, fmt, inst.symbol, step)
            assert pages == await walk_forward(second, fmt, inst.symbol, step)
            rows = [row for page in pages for row in page]
            assert [t for t, _ in rows] == list(range(LISTED_MS, NOW_MS + 1, step))
            assert [rate for _, rate in rows] == [market.funding_rate(inst, t) for t, _ in rows]
            assert all(len(page) <= PAGE_CAP[fmt] for page in pages)
        assert len(pages) == -(-(60 * 24 + 6) // PAGE_CAP[fmt])  # the hourly one spans pages


@pytest.mark.parametrize("fmt", FORMATS)
async def test_history_order_page_cap_and_anchor_on_the_wire(fmt):
    path, id_param, time_field = HISTORY_PATH[fmt]
    async with EmulatorServer([venue(fmt)]) as srv, aiohttp.ClientSession() as http:
        market_id = srv.venues[fmt].market_ids[0]
        query = {id_param: market_id, "limit": "5000"}
        if fmt == "bybit":
            query["category"] = "linear"
        async with http.get(srv.venue_base_url(fmt) + path, params=query) as response:
            body = await response.json()
    rows = body if fmt == "binanceusdm" else body["result"]["list"] if fmt == "bybit" \
        else body["data"]
    times = [int(row[time_field]) for row in rows]
    assert len(times) == min(PAGE_CAP[fmt], 60 * 3 + 1)
    newest = NOW_MS - NOW_MS % (8 * HOUR_MS)
    if fmt == "binanceusdm":  # ascending; without startTime the latest page
        assert times == sorted(times) and times[-1] == newest
    else:  # newest first, anchored at the newest end
        assert times == sorted(times, reverse=True) and times[0] == newest


async def test_history_values_do_not_depend_on_clock_or_listing():
    early = GeneratedVenue("bybit", seed=4, now_ms=fixed_clock, listed_ms=LISTED_MS)
    late = GeneratedVenue("bybit", seed=4, now_ms=lambda: NOW_MS + 9 * DAY_MS)
    other_seed = GeneratedVenue("bybit", seed=5, now_ms=fixed_clock)
    settlements = range(NOW_MS - NOW_MS % HOUR_MS - 48 * HOUR_MS, NOW_MS, 8 * HOUR_MS)
    rates = [[v.market.funding_rate(v.market.instruments[2], t) for t in settlements]
             for v in (early, late, other_seed)]
    assert rates[0] == rates[1] != rates[2]


async def test_bybit_instruments_pages_with_limit_and_cursor():
    async with EmulatorServer([venue("bybit")]) as srv, aiohttp.ClientSession() as http:
        url = srv.venue_base_url("bybit") + "/v5/market/instruments-info"
        symbols, cursor = [], None
        while True:
            query = {"category": "linear", "limit": "7", **({"cursor": cursor} if cursor else {})}
            async with http.get(url, params=query) as response:
                result = (await response.json())["result"]
            assert len(result["list"]) <= 7
            symbols += [row["symbol"] for row in result["list"]]
            cursor = result["nextPageCursor"]
            if not cursor:
                break
        async with http.get(url, params={"category": "linear", "status": "PreLaunch"}) as response:
            prelaunch = (await response.json())["result"]["list"]
    assert symbols == sorted(symbols) and len(set(symbols)) == len(symbols) == 43
    assert [row["status"] for row in prelaunch] == ["PreLaunch"]
    assert prelaunch[0]["symbol"] == "P001USDT" and prelaunch[0]["isPreListing"] is True


async def test_ccxt_follows_bybit_cursor_beyond_1000_instruments():
    big = GeneratedVenue("bybit", symbols=1100, now_ms=fixed_clock)
    async with EmulatorServer([big]) as srv:
        async with ccxt_client(srv, "bybit") as ex:
            markets = await ex.load_markets()
        assert srv.requests.count("bybit", "/v5/market/instruments-info") == 3
    assert sum(m["linear"] and m["swap"] and m["settle"] == "USDT" and m["active"]
               for m in markets.values()) == 1100
