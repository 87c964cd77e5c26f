"""Venue quirks that lose data, as unmodified ccxt (``build_client``) sees them over HTTP, and the
emulator's ground truth (``expected_settlements``, ``expected_current``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import ccxt.async_support as ccxt
import pytest

from perpflow.emulator import EmulatorServer, GeneratedVenue
from perpflow.emulator.__main__ import build_server, main, parse_args
from perpflow.emulator.market import IntervalSchedule
from perpflow.emulator.quirks import Quirks
from perpflow.exchanges import build_client
from perpflow.settings import ExchangeConfig

from .helpers import FORMATS, HOUR_MS, NOW_MS, fixed_clock

DAY_MS = 24 * HOUR_MS
LISTED_MS = NOW_MS - NOW_MS % DAY_MS - 60 * DAY_MS
BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
PAGE_CAP = {"binanceusdm": 1000, "bybit": 200, "okx": 100}


def venue(fmt: str, quirks: Quirks | None = None, now_ms: Callable[[], int] = fixed_clock,
          symbols: int = 12) -> GeneratedVenue:
    return GeneratedVenue(fmt, symbols=symbols, seed=5, now_ms=now_ms, listed_ms=LISTED_MS,
                          quirks=quirks)


@asynccontextmanager
async def serving(gv: GeneratedVenue, ccxt_config: dict | None = None
                  ) -> AsyncIterator[tuple[EmulatorServer, ccxt.Exchange]]:
    """The venue on a server and a product ccxt client (``build_client`` + ``api_url``)."""
    async with EmulatorServer([gv]) as srv:
        config = ExchangeConfig(
            id=gv.format, api_url=srv.venue_base_url(gv.name),
            ccxt_config={"enableRateLimit": False, "timeout_on_exit": 0, **(ccxt_config or {})},
        )
        client = build_client(config)
        try:
            await client.load_markets()
            yield srv, client
        finally:
            await client.close()


def bounded(fmt: str, until_ms: int) -> dict:
    """An inclusive upper bound as the product passes it (okx: raw exclusive ``after``)."""
    return {"after": until_ms + 1} if fmt == "okx" else {"until": until_ms}


def raw_rows(ex: ccxt.Exchange) -> list[dict]:
    """The rows of the last JSON body ccxt received."""
    body = ex.last_json_response
    return body if isinstance(body, list) else body["result"]["list"] if "result" in body \
        else body["data"]


def raw_times(ex: ccxt.Exchange) -> list[int]:
    keys = ("fundingTime", "fundingRateTimestamp")
    return [int(next(row[k] for k in keys if k in row)) for row in raw_rows(ex)]


def parsed(rows: list[dict], symbol: str) -> list[tuple[str, int, float]]:
    assert all(row["symbol"] == symbol for row in rows)
    return [(row["symbol"], row["timestamp"], row["fundingRate"]) for row in rows]


# -- funding history ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
async def test_history_newest_first(fmt):
    gv = venue(fmt, Quirks(history_newest_first=True))
    since, until = NOW_MS - 10 * DAY_MS, NOW_MS - 8 * DAY_MS
    async with serving(gv) as (_, ex):
        rows = await ex.fetch_funding_rate_history(BTC, since, 50, bounded(fmt, until))
        times = raw_times(ex)
    expected = gv.expected_settlements(BTC, since, until)
    assert len(expected) == 6 and parsed(rows, BTC) == expected  # ccxt sorts them back
    assert times == sorted(times, reverse=True) == [t for _, t, _ in reversed(expected)]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_history_ignores_since(fmt):
    gv = venue(fmt, Quirks(history_ignores_since=True))
    since, until = NOW_MS - 10 * DAY_MS, NOW_MS - 9 * DAY_MS
    async with serving(gv) as (_, ex):
        rows = await ex.fetch_funding_rate_history(BTC, since, 20, bounded(fmt, until))
        served = raw_times(ex)
        # without an upper bound Binance answers the newest page instead of the one from since
        # (ccxt bybit adds endTime = since + limit x interval, which holds 31 settlements: the
        # newest 30 come back and the listing's own is lost; okx pages from the newest end)
        from_listing = await ex.fetch_funding_rate_history(BTC, LISTED_MS, 30)
    newest_20 = [t for _, t, _ in gv.expected_settlements(BTC, None, until)][-20:]
    assert sorted(served) == newest_20 and min(served) < since
    assert parsed(rows, BTC) == gv.expected_settlements(BTC, since, until)  # ccxt drops < since
    everything = gv.expected_settlements(BTC)
    assert parsed(from_listing, BTC) == (everything[1:31] if fmt == "bybit" else everything[-30:])


@pytest.mark.parametrize("fmt", FORMATS)
async def test_history_page_capped_whatever_the_limit(fmt):
    gv = venue(fmt, Quirks(history_page_cap=25))
    since, until = NOW_MS - 40 * DAY_MS, NOW_MS - 10 * DAY_MS
    async with serving(gv) as (_, ex):
        rows = await ex.fetch_funding_rate_history(BTC, since, PAGE_CAP[fmt], bounded(fmt, until))
    window = gv.expected_settlements(BTC, since, until)
    assert len(window) == 90 and len(rows) == 25
    # Binance anchors the page at startTime, Bybit and OKX at the window's newest end
    assert parsed(rows, BTC) == (window[:25] if fmt == "binanceusdm" else window[-25:])


@pytest.mark.parametrize("fmt", FORMATS)
async def test_history_ignores_until(fmt):
    gv = venue(fmt, Quirks(history_ignores_until=True))
    since, until = NOW_MS - 10 * DAY_MS, NOW_MS - 9 * DAY_MS
    async with serving(gv) as (_, ex):
        rows = await ex.fetch_funding_rate_history(BTC, since, 20, bounded(fmt, until))
    expected = gv.expected_settlements(BTC, since)[:20]
    assert parsed(rows, BTC) == expected and rows[-1]["timestamp"] > until + 5 * DAY_MS


@pytest.mark.parametrize("fmt", FORMATS)
async def test_funding_history_not_served(fmt):
    gv = venue(fmt, Quirks(no_funding_history=True))
    raised = {"binanceusdm": ccxt.ExchangeNotAvailable, "bybit": ccxt.ExchangeError,
              "okx": ccxt.ExchangeError}[fmt]
    async with serving(gv) as (srv, ex):
        with pytest.raises(raised, match="404|Not Found"):
            await ex.fetch_funding_rate_history(BTC, NOW_MS - DAY_MS, 10)
        assert (await ex.fetch_funding_rate(BTC))["fundingRate"] is not None
    assert srv.requests.records()[-2].status == 404
    assert gv.handle("GET", gv.dialect.history_path, {}).status == 404


# -- bulk endpoints ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
async def test_no_bulk_funding_only_per_symbol(fmt):
    gv = venue(fmt, Quirks(no_bulk_funding=True))
    async with serving(gv) as (_, ex):
        with pytest.raises(ccxt.BadRequest):  # BadSymbol (okx 51001) is a BadRequest
            await ex.fetch_funding_rates()
        rate = await ex.fetch_funding_rate(ETH)
    truth = gv.expected_current(ETH)
    assert (rate["fundingRate"], rate["fundingTimestamp"]) == (truth.funding_rate,
                                                               truth.funding_ms)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_bulk_tickers_refuse_more_than_one_symbol(fmt):
    gv = venue(fmt, Quirks(single_symbol_tickers=True))
    async with serving(gv) as (_, ex):
        with pytest.raises(ccxt.BadRequest, match="cannot contain more than 1 symbol"):
            await ex.fetch_tickers([BTC, ETH])
        if fmt == "binanceusdm":
            with pytest.raises(ccxt.BadRequest, match="more than 1 symbol"):
                await ex.fetch_bids_asks([BTC, ETH])
        ticker = await ex.fetch_ticker(ETH)
    assert ticker["last"] == gv.expected_current(ETH).last


# -- current values ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["binanceusdm", "okx"])
async def test_ticker_time_stays_at_the_last_trade(fmt):
    clock = [NOW_MS]
    gv = venue(fmt, Quirks(stale_instruments=(ETH,), trade_every_min=60), now_ms=lambda: clock[0])
    seen = []
    async with serving(gv) as (_, ex):
        for minute in range(10):
            clock[0] = NOW_MS + minute * 60_000
            ticker, rate = await ex.fetch_ticker(ETH), await ex.fetch_funding_rate(ETH)
            fresh = await ex.fetch_ticker(BTC)
            truth = gv.expected_current(ETH)
            rate_ms = rate["timestamp"] if fmt == "binanceusdm" else int(rate["info"]["ts"])
            assert ticker["timestamp"] == rate_ms == truth.venue_ms <= clock[0]
            assert clock[0] - truth.venue_ms < 60 * 60_000
            assert ticker["last"] == truth.last and fresh["timestamp"] == clock[0]
            assert rate["fundingRate"] == truth.funding_rate
            if fmt == "binanceusdm":
                assert rate["markPrice"] == pytest.approx(truth.mark, rel=1e-9)
            seen.append((truth.venue_ms, truth.mark))
    assert len({t for t, _ in seen}) <= 2 and len({m for _, m in seen}) == 10


async def test_stale_fraction_on_okx_tickers():
    gv = venue("okx", Quirks(stale_fraction=0.5, trade_every_min=240), symbols=40)
    async with serving(gv) as (_, ex):
        tickers = await ex.fetch_tickers([s for s in ex.symbols if ex.market(s)["swap"]])
    assert len(tickers) == 43
    stale = {s for s, t in tickers.items() if t["timestamp"] != NOW_MS}
    assert 5 < len(stale) < 35
    assert all(tickers[s]["timestamp"] == gv.expected_current(s).venue_ms for s in tickers)


@pytest.mark.parametrize("contract_size", [None, 0.001])
async def test_okx_volume_in_contracts(contract_size):
    """ccxt okx reports ``baseVolume`` = ``vol24h``: contracts, not base currency; base volume
    is ``baseVolume * contractSize`` (``contractSize`` = the listing's ``ctVal``)."""
    gv = venue("okx", Quirks(contract_size=contract_size))
    async with serving(gv) as (_, ex):
        tickers = await ex.fetch_tickers([BTC, ETH])
        sizes = {s: ex.market(s)["contractSize"] for s in (BTC, ETH)}
    assert sizes == ({BTC: 0.01, ETH: 0.1} if contract_size is None
                     else {BTC: 0.001, ETH: 0.001})
    for symbol, ticker in tickers.items():
        base = gv.expected_current(symbol).base_volume
        assert ticker["baseVolume"] == pytest.approx(base / sizes[symbol], abs=0.006)
        assert ticker["baseVolume"] != pytest.approx(base, rel=0.5)
        assert ticker["quoteVolume"] is None


@pytest.mark.parametrize("fmt", FORMATS)
async def test_inverse_perpetuals_with_funding(fmt):
    if fmt == "binanceusdm":
        with pytest.raises(ValueError, match="COIN-M"):
            venue(fmt, Quirks(inverse=True))
        return
    gv = venue(fmt, Quirks(inverse=True))
    types = {"bybit": {"options": {"fetchMarkets": {"types": ["linear", "inverse"]}}}}
    inverse = ["BTC/USD:BTC", "ETH/USD:ETH"]
    since, until = NOW_MS - 20 * DAY_MS, NOW_MS - 5 * DAY_MS
    async with serving(gv, types.get(fmt)) as (_, ex):
        assert all(ex.market(s)["inverse"] and ex.market(s)["settle"] == s[:3] for s in inverse)
        history = await ex.fetch_funding_rate_history(inverse[0], since, 100, bounded(fmt, until))
        rates = await ex.fetch_funding_rates(inverse)
        ticker = await ex.fetch_ticker(inverse[0])
    assert parsed(history, inverse[0]) == gv.expected_settlements(inverse[0], since, until)
    for symbol in inverse:
        truth = gv.expected_current(symbol)
        assert (rates[symbol]["fundingRate"], rates[symbol]["fundingTimestamp"]) == (
            truth.funding_rate, truth.funding_ms)
    truth = gv.expected_current(inverse[0])
    usd_volume = truth.base_volume * (truth.last if fmt == "bybit" else 1)
    if fmt == "bybit":  # volume24h is USD (contracts of 1 USD): ccxt's baseVolume is USD
        assert ex.market(inverse[0])["contractSize"] == 1
        assert ticker["baseVolume"] == pytest.approx(usd_volume, rel=0.05)
        assert ticker["quoteVolume"] == pytest.approx(truth.base_volume, rel=1e-6)
    else:  # vol24h in contracts of ctVal = 100 USD
        assert ex.market(inverse[0])["contractSize"] == 100
        assert ticker["baseVolume"] == pytest.approx(truth.base_volume * truth.last / 100,
                                                     abs=1)


# -- funding intervals -------------------------------------------------------------------------

CHANGE_MS = NOW_MS - NOW_MS % (8 * HOUR_MS) - 10 * DAY_MS  # BTC 8h -> 4h here
UPCOMING_MS = NOW_MS - NOW_MS % (8 * HOUR_MS) + 8 * HOUR_MS  # ETH 8h -> 4h after the next one
INTERVALS = Quirks(
    intervals=(("C001/USDT:USDT", 1), ("C002/USDT:USDT", 4), ("C003/USDT:USDT", 8)),
    interval_changes=((BTC, CHANGE_MS, 4), (ETH, UPCOMING_MS, 4)),
)


async def walk(ex: ccxt.Exchange, fmt: str, symbol: str, step_ms: int) -> list:
    """Every settlement from the listing to now, in windows of page-cap x ``step_ms``."""
    rows, cursor = [], LISTED_MS
    while cursor <= NOW_MS:
        end = cursor + PAGE_CAP[fmt] * step_ms - 1
        rows += await ex.fetch_funding_rate_history(symbol, cursor, PAGE_CAP[fmt],
                                                    bounded(fmt, end))
        cursor = end + 1
    return parsed(rows, symbol)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_hourly_4h_and_an_interval_change(fmt):
    gv = venue(fmt, INTERVALS)
    async with serving(gv) as (_, ex):
        history = await walk(ex, fmt, BTC, 4 * HOUR_MS)
        hourly = await walk(ex, fmt, "C001/USDT:USDT", HOUR_MS)
        symbols = [BTC, ETH, "C001/USDT:USDT", "C002/USDT:USDT", "C003/USDT:USDT"]
        rates = {s: await ex.fetch_funding_rate(s) for s in symbols}
        shown = (await ex.fetch_funding_intervals(symbols)) if fmt == "binanceusdm" else rates
    truth = gv.expected_settlements(BTC)
    assert history == truth
    steps = {t - s for (_, s, _), (_, t, _) in zip(truth, truth[1:])}
    assert steps == {8 * HOUR_MS, 4 * HOUR_MS}
    assert all(t - s == (8 if t <= CHANGE_MS else 4) * HOUR_MS
               for (_, s, _), (_, t, _) in zip(truth, truth[1:]))
    assert hourly == gv.expected_settlements("C001/USDT:USDT") and len(hourly) > 1400
    # the interval the venue shows now: okx's is the fundingTime -> nextFundingTime spacing,
    # i.e. the period after the upcoming settlement (4h for ETH already)
    now_shown = {BTC: "4h", ETH: "4h" if fmt == "okx" else None if fmt == "binanceusdm" else "8h",
                 "C001/USDT:USDT": "1h", "C002/USDT:USDT": "4h",
                 "C003/USDT:USDT": None if fmt == "binanceusdm" else "8h"}
    for symbol, interval in now_shown.items():
        assert (shown.get(symbol) or {}).get("interval") == interval
        truth_now = gv.expected_current(symbol)
        assert rates[symbol]["fundingTimestamp"] == truth_now.funding_ms
        assert rates[symbol]["fundingRate"] == truth_now.funding_rate
    eth = gv.expected_current(ETH)
    assert (eth.funding_ms, eth.interval_h, eth.next_funding_ms) == (
        UPCOMING_MS, 8, UPCOMING_MS + 4 * HOUR_MS)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_after_the_change_the_current_endpoint_follows(fmt):
    later = UPCOMING_MS + 30 * 60_000
    gv = venue(fmt, INTERVALS, now_ms=lambda: later)
    async with serving(gv) as (_, ex):
        rate = await ex.fetch_funding_rate(ETH)
        shown = (await ex.fetch_funding_intervals([ETH]))[ETH] if fmt == "binanceusdm" else rate
    assert shown["interval"] == "4h"
    assert rate["fundingTimestamp"] == UPCOMING_MS + 4 * HOUR_MS
    if fmt == "bybit":
        assert ex.market(ETH)["info"]["fundingInterval"] == 240


# -- ground truth, validation, CLI -------------------------------------------------------------

def test_expected_settlements_follow_the_schedule():
    gv = venue("bybit", INTERVALS)
    start, end = CHANGE_MS - 16 * HOUR_MS, CHANGE_MS + 12 * HOUR_MS
    got = gv.expected_settlements("BTCUSDT", start, end)
    assert [t - CHANGE_MS for _, t, _ in got] == [h * HOUR_MS for h in (-16, -8, 0, 4, 8, 12)]
    _, inst = gv.instrument(BTC)
    assert [rate for _, _, rate in got] == [gv.market.funding_rate(inst, t) for _, t, _ in got]
    assert gv.market.interval_h_at(inst, CHANGE_MS) == 8
    assert gv.market.interval_h_at(inst, CHANGE_MS + 1) == 4
    plain = venue("bybit")
    assert plain.expected_settlements(ETH)[:3] == gv.expected_settlements(ETH)[:3]
    with pytest.raises(ValueError, match="dated future"):
        gv.expected_settlements("BTC/USDT:USDT-260327")


def test_bad_schedules_and_quirks_are_refused():
    with pytest.raises(ValueError, match="not a settlement"):
        venue("okx", Quirks(interval_changes=((BTC, CHANGE_MS + 4 * HOUR_MS, 4),)))
    with pytest.raises(ValueError, match="dividing 24"):
        IntervalSchedule(5)
    with pytest.raises(ValueError, match="no instrument"):
        venue("okx", Quirks(intervals=(("DOGE/USDT:USDT", 4),)))
    with pytest.raises(ValueError, match="bybit format cannot realise stale_instruments"):
        venue("bybit", Quirks(stale_instruments=(BTC,)))
    for fmt in ("binanceusdm", "bybit"):
        with pytest.raises(ValueError, match="contract_size"):
            venue(fmt, Quirks(contract_size=0.01))
    with pytest.raises(ValueError, match="history_page_cap"):
        Quirks(history_page_cap=0)
    with pytest.raises(ValueError, match="unknown"):
        Quirks.from_json({"newest_first": True})


def test_quirks_json_round_trip():
    quirks = Quirks.from_json({"intervals": {"BTCUSDT": 4}, "stale_instruments": [1],
                               "interval_changes": [["ETHUSDT", CHANGE_MS, 4]]})
    assert quirks.intervals == (("BTCUSDT", 4),) and quirks.stale_instruments == (1,)
    assert Quirks.from_json(quirks.to_json()) == quirks
    assert quirks.active() == ["stale_instruments", "intervals", "interval_changes"]


def test_cli_quirks_for_all_or_one_venue(capsys):
    args = parse_args(["--venues", "binanceusdm,bybit,okx", "--symbols", "3",
                       "--quirks", '{"history_page_cap": 25}',
                       "--quirks", 'bybit={"inverse": true}'])
    server = build_server(args)
    assert server.venues["okx"].quirks == Quirks(history_page_cap=25)
    assert server.venues["bybit"].quirks == Quirks(inverse=True)
    assert "BTCUSD" in server.venues["bybit"].market_ids
    assert main(["--venues", "bybit", "--quirks", '{"stale_fraction": 0.1}']) == 2
    assert "cannot realise stale_fraction" in capsys.readouterr().err
    assert main(["--venues", "okx", "--quirks", 'kraken={"inverse": true}']) == 2
