"""The collection flows against venues that refuse bulk calls, lack a dataset, list inverse
contracts, or are configured to collect part of what they offer (emulator quirks over HTTP, real
SQLite file): every expected snapshot is stored, and the ledger says truly what happened."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from flows.collect_tickers import collect_tickers
from flows.sweep_funding_rates import sweep_funding_rates
from perpflow import health
from perpflow.emulator import EmulatorServer, GeneratedVenue
from perpflow.emulator.quirks import Quirks
from perpflow.settings import load_settings
from perpflow.store import collection_ledger, create_engine, funding_rates, tickers
from tests.test_flows import FROZEN_MS, assert_ledger_balanced, by_venue, configure, fetch_all, perpetuals

pytestmark = pytest.mark.usefixtures("prefect_server")


def venue(name: str, **quirks) -> GeneratedVenue:
    return GeneratedVenue(name, symbols=12, seed=5, now_ms=lambda: FROZEN_MS, quirks=Quirks(**quirks))


async def test_refused_bulk_calls_fall_back_and_store_every_perpetual(tmp_path, monkeypatch):
    url = f"sqlite+aiosqlite:///{tmp_path / 'bulk.sqlite'}"
    venues = [
        venue("binanceusdm", single_symbol_tickers=True, no_bulk_funding=True),
        venue("bybit", no_bulk_funding=True),  # bybit's funding rides on its tickers
        venue("okx", single_symbol_tickers=True, no_bulk_funding=True),
    ]
    names = [v.name for v in venues]
    with EmulatorServer(venues).running_in_thread() as server:
        configure(monkeypatch, url, server, names)
        ticks = await collect_tickers()
        sweep = await sweep_funding_rates()
        expected = {name: perpetuals(server, name) for name in names}
        truth = {name: {s: server.venues[name].expected_current(s) for s in expected[name]}
                 for name in names}
    assert_ledger_balanced(ticks + sweep)
    outcomes = {(o["exchange"], o["dataset"]): o for o in ticks + sweep}
    for name in names:
        for dataset in ("tickers", "funding_rates"):
            o = outcomes[(name, dataset)]
            assert (o["status"], o["stored"], o["failed"]) == ("ok", len(expected[name]), 0), o
    stored_rates = by_venue(await fetch_all(url, funding_rates))
    stored_ticks = by_venue(await fetch_all(url, tickers))
    for name in names:
        assert {r.symbol for r in stored_ticks[name]} == set(expected[name])
        for row in stored_rates[name]:
            assert row.funding_rate == pytest.approx(truth[name][row.symbol].funding_rate), row


async def test_a_dataset_ccxt_does_not_offer_is_unsupported_not_failed(tmp_path, monkeypatch):
    url = f"sqlite+aiosqlite:///{tmp_path / 'unsupported.sqlite'}"
    with EmulatorServer([venue("okx")]).running_in_thread() as server:
        # A venue whose ccxt class has no funding-history call, as ccxt declares it.
        configure(monkeypatch, url, server, ["okx"],
                  okx={"ccxt_config": {**server.ccxt_config("okx"), "enableRateLimit": False,
                                       "has": {"fetchFundingRateHistory": False}}})
        state = await sweep_funding_rates(return_state=True)
        history_requests = server.requests.count("okx", "/api/v5/public/funding-rate-history")
    assert state.is_completed()
    outcomes = {o["dataset"]: o for o in await state.result()}
    assert outcomes["funding_history"]["status"] == "unsupported"
    assert "fetchFundingRateHistory" in outcomes["funding_history"]["error"]
    assert outcomes["funding_rates"]["status"] == "ok"
    assert history_requests == 0
    checks = await _freshness(url)
    assert checks["freshness.okx.funding_history"].status == health.NA
    assert checks["freshness.okx.funding_rates"].status == health.OK


async def test_wanted_datasets_and_an_empty_selection(tmp_path, monkeypatch):
    url = f"sqlite+aiosqlite:///{tmp_path / 'config.sqlite'}"
    with EmulatorServer([venue("bybit"), venue("okx")]).running_in_thread() as server:
        configure(monkeypatch, url, server, ["bybit", "okx"],
                  bybit={"datasets": ["funding_rates"]}, okx={"symbols": ["NOPE/*"]})
        state = await collect_tickers(return_state=True)
        await sweep_funding_rates()
    assert state.is_completed()
    (okx,) = await state.result()  # bybit is not asked for tickers at all
    assert (okx["exchange"], okx["status"], okx["requested"]) == ("okx", "empty", 0)
    assert "NOPE/*" in okx["error"]
    ledger = {(r.exchange, r.dataset): r.status for r in await fetch_all(url, collection_ledger)}
    assert ("bybit", "tickers") not in ledger and ledger[("bybit", "funding_rates")] == "ok"
    assert ("bybit", "funding_history") not in ledger
    checks = await _freshness(url)
    assert checks["freshness.bybit.tickers"].status == health.NA
    assert checks["freshness.bybit.funding_rates"].status == health.OK


async def test_inverse_contracts_are_collected_with_linear_ones(tmp_path, monkeypatch):
    url = f"sqlite+aiosqlite:///{tmp_path / 'inverse.sqlite'}"
    with EmulatorServer([venue("bybit", inverse=True)]).running_in_thread() as server:
        configure(monkeypatch, url, server, ["bybit"])
        ticks = await collect_tickers()
        sweep = await sweep_funding_rates()
        expected = perpetuals(server, "bybit")
        truth = {s: server.venues["bybit"].expected_current(s) for s in expected}
    inverse = {s for s, inst in expected.items() if inst.inverse}
    assert inverse == {"BTC/USD:BTC", "ETH/USD:ETH"}
    assert_ledger_balanced(ticks + sweep)
    assert {o["status"] for o in ticks + sweep} == {"ok"}
    rates = {r.symbol: r for r in await fetch_all(url, funding_rates)}
    assert set(rates) == set(expected)
    for symbol in inverse:
        assert rates[symbol].funding_rate == pytest.approx(truth[symbol].funding_rate)
        assert rates[symbol].mark_price == pytest.approx(truth[symbol].mark, rel=1e-4)


async def _freshness(url: str) -> dict[str, health.Check]:
    engine = create_engine(url)
    try:
        now = datetime.fromtimestamp(FROZEN_MS / 1000, UTC)
        checks = await health.freshness_checks(engine, load_settings(), now)
    finally:
        await engine.dispose()
    return {check.name: check for check in checks}


async def test_a_changed_observation_at_the_last_trade_time_is_stored(tmp_path, monkeypatch):
    """binanceusdm stamps tickers and premium-index funding rows with the last trade's time: BTC
    trades every 15 min, so two polls a minute apart share its time while its mark price moves.
    The changed funding observation is a new row; an unchanged one is a duplicate."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'stale.sqlite'}"
    clock = [FROZEN_MS]
    quirks = Quirks(stale_instruments=("BTC/USDT:USDT",), trade_every_min=15)
    binance = GeneratedVenue("binanceusdm", symbols=12, seed=5, now_ms=lambda: clock[0],
                             quirks=quirks)
    btc = "BTC/USDT:USDT"
    first_trade = binance.expected_current(btc).venue_ms
    clock[0] = first_trade + 60_000  # a minute after BTC's last trade, then one more
    with EmulatorServer([binance]).running_in_thread() as server:
        configure(monkeypatch, url, server, ["binanceusdm"])
        runs = []
        for _ in range(2):
            runs.append(await collect_tickers() + await sweep_funding_rates())
            clock[0] += 60_000
        assert binance.expected_current(btc).venue_ms == first_trade
    for outcomes in runs:
        assert_ledger_balanced(outcomes)
    rates = [r for r in await fetch_all(url, funding_rates) if r.symbol == btc]
    assert len(rates) == 2 and len({r.ts for r in rates}) == 1  # same venue time
    assert rates[0].mark_price != rates[1].mark_price
    assert len({r.collected_at for r in rates}) == 2
    second = {o["dataset"]: o for o in runs[1]}
    assert second["funding_rates"]["stored"] == len(perpetuals(server, "binanceusdm"))
    ticks = [r for r in await fetch_all(url, tickers) if r.symbol == btc]
    assert len({r.ts for r in ticks}) == 1
    values = {(r.bid, r.ask, r.last, r.base_volume, r.quote_volume) for r in ticks}
    assert len(values) == len(ticks)  # stored again only where a value changed
    assert second["tickers"]["duplicates"] == 2 - len(ticks)


async def test_contract_denominated_volume_is_stored_in_base_with_the_contracts_kept(
    tmp_path, monkeypatch
):
    url = f"sqlite+aiosqlite:///{tmp_path / 'contracts.sqlite'}"
    okx = venue("okx", contract_size=0.01)
    with EmulatorServer([okx]).running_in_thread() as server:
        configure(monkeypatch, url, server, ["okx"])
        (outcome,) = await collect_tickers()
        expected = perpetuals(server, "okx")
        truth = {s: okx.expected_current(s) for s in expected}
    assert outcome["status"] == "ok"
    for row in await fetch_all(url, tickers):
        if expected[row.symbol].inverse:
            continue
        assert row.base_volume == pytest.approx(truth[row.symbol].base_volume, rel=1e-6), row
        assert row.contract_volume == pytest.approx(row.base_volume / 0.01, rel=1e-9), row


async def test_a_retry_asks_only_for_the_symbols_that_failed(tmp_path, monkeypatch):
    """cryptocom has no bulk funding call: one request per symbol. Two of them are rate limited
    (429); the task is retried by Prefect and the retry asks only for those two."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'retry.sqlite'}"
    path = "/exchange/v1/public/get-valuations"
    with EmulatorServer([venue("cryptocom")]).running_in_thread() as server:
        configure(monkeypatch, url, server, ["cryptocom"], cryptocom={"datasets": ["funding_rates"]})
        count = len(perpetuals(server, "cryptocom"))
        server.fail("cryptocom", path, status=429, times=2)
        (outcome,) = await sweep_funding_rates()
        asked = server.requests.count("cryptocom", path)
    assert (outcome["status"], outcome["stored"], outcome["failed"]) == ("ok", count, 0)
    assert outcome["attempts"] == 2
    assert asked == count + 2  # every symbol once, the two that failed once more


async def test_the_venues_retry_after_is_waited_out(tmp_path, monkeypatch):
    url = f"sqlite+aiosqlite:///{tmp_path / 'after.sqlite'}"
    path = "/api/v5/market/tickers"
    with EmulatorServer([venue("okx")]).running_in_thread() as server:
        configure(monkeypatch, url, server, ["okx"])
        server.fail("okx", path, status=429, times=1, retry_after=3)
        (outcome,) = await collect_tickers()
        stamps = [r.monotonic for r in server.requests.records() if r.path == path]
    assert outcome["status"] == "ok" and outcome["attempts"] == 2
    # One refused request, then (after the wait) one per contract type (linear, inverse).
    assert len(stamps) == 3 and min(stamps[1:]) - stamps[0] >= 3.0


async def test_a_failed_enrichment_call_is_retried_then_said(tmp_path, monkeypatch):
    """binanceusdm's tickers carry no book: bid/ask come from fetchBidsAsks (bookTicker). A
    passing 503 there is retried with the step; one that lasts leaves bid/ask unknown, and the
    ledger says so instead of passing the rows off as complete."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'enrich.sqlite'}"
    path = "/fapi/v1/ticker/bookTicker"
    with EmulatorServer([venue("binanceusdm")]).running_in_thread() as server:
        configure(monkeypatch, url, server, ["binanceusdm"])
        server.fail("binanceusdm", path, status=503, times=1)
        (passing,) = await collect_tickers()
        server.fail("binanceusdm", path, status=503, times=None)
        (lasting,) = await collect_tickers()
        server.clear_faults()
    assert (passing["status"], passing["attempts"], passing["error"]) == ("ok", 2, None)
    assert lasting["status"] == "ok" and lasting["attempts"] == 5
    assert "fetch_bids_asks failed (ExchangeNotAvailable): bid/ask unknown" in lasting["error"]
    rows = await fetch_all(url, tickers)
    first, last = sorted({r.collected_at for r in rows})
    assert all(r.bid is not None for r in rows if r.collected_at == first)
    assert all(r.bid is None for r in rows if r.collected_at == last)


async def test_a_failed_market_list_still_counts_what_the_step_meant_to_fetch(tmp_path, monkeypatch):
    """When load_markets itself fails, the failed row's ``requested`` is the venue's active
    instruments the store knows, all failed: the ledger's unaccounted-rows query sees the loss."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'markets.sqlite'}"
    with EmulatorServer([venue("okx")]).running_in_thread() as server:
        configure(monkeypatch, url, server, ["okx"])
        (first,) = await collect_tickers()
        configure(monkeypatch, url, server, ["okx"])  # a new config: no cached market list
        server.fail("okx", "/api/v5/public/instruments", status=503, times=None)
        state = await collect_tickers(return_state=True)
        server.clear_faults()
    assert first["status"] == "ok"
    (failed,) = [r for r in await fetch_all(url, collection_ledger) if r.status == "failed"]
    assert failed.requested == failed.failed == first["requested"] > 0
    assert state.is_failed()
