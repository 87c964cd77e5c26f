"""The project's own collection path (market selection, snapshot fetches) on every venue the
emulator speaks, in each venue's REST format: every perpetual is selected and fetched, and what
the venue's payload does not give (an interval, a settlement time) stays unknown, never guessed."""

from __future__ import annotations

import pytest

from perpflow import exchanges, snapshots
from perpflow.emulator import EmulatorServer, GeneratedVenue
from perpflow.emulator.formats import FORMATS
from perpflow.emulator.market import PERPETUAL, TRADING
from perpflow.scope import RunScope
from perpflow.settings import ExchangeConfig

N = 6


@pytest.mark.parametrize("fmt", sorted(FORMATS))
async def test_every_perpetual_is_selected_and_fetched(fmt):
    venue = GeneratedVenue(fmt, symbols=N, seed=3)
    async with EmulatorServer([venue]) as srv, RunScope():
        config = ExchangeConfig(id=fmt, api_url=srv.venue_base_url(fmt),
                                ccxt_config={**srv.ccxt_config(fmt), "enableRateLimit": False})
        markets = await exchanges.load_perpetuals(config)
        expected = {i.symbol: i for i in venue.market.instruments
                    if i.kind == PERPETUAL and i.status == TRADING}
        assert set(markets) == set(expected)
        async with exchanges.exchange_client(config) as client:
            has = client.has
        tickers = await snapshots.fetch_snapshots(config, "tickers", markets, 0)
        assert set(tickers.items) == set(markets) and not tickers.unparsed and not tickers.failed
        for symbol, ticker in tickers.items.items():
            assert ticker["last"] > 0, symbol
            if ticker["bid"] is not None:
                assert 0 < ticker["bid"] < ticker["ask"], symbol
            else:  # no book in the tickers, and ccxt offers no other call for it
                assert not has.get("fetchBidsAsks"), symbol
        rates = await snapshots.fetch_snapshots(config, "funding_rates", markets, 0)
        assert set(rates.items) == set(markets) and not rates.unparsed and not rates.failed
        for symbol, rate in rates.items.items():
            inst = expected[symbol]
            assert rate["fundingRate"] is not None, symbol
            if rate["interval"] is None:  # unknown stays unknown (inferred from settlements later)
                assert not has.get("fetchFundingIntervals"), symbol
            else:
                assert rate["interval"] == f"{inst.interval_h}h", symbol
            settles = rate["fundingTimestamp"]
            if settles is not None and settles % inst.interval_ms == 0:
                assert rate["fundingRate"] == pytest.approx(venue.market.funding_rate(inst, settles))
