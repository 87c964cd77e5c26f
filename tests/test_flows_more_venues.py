"""Both collection flows on the venues added by configuration alone, each spoken by the emulator
in its real REST format (hyperliquid's POST API, kucoinfutures lots, binancecoinm inverse-only,
cryptocom and phemex without a bulk funding call): every perpetual's ticker and funding rate is
stored, every settlement of the lookback is stored or explained, and the ledger balances."""

from __future__ import annotations

import pytest

from flows.collect_tickers import collect_tickers
from flows.sweep_funding_rates import sweep_funding_rates
from perpflow.emulator import EmulatorServer, GeneratedVenue
from perpflow.store import funding_rates, quarantine, tickers
from tests.test_flows import FROZEN_MS, assert_ledger_balanced, by_venue, configure, fetch_all, perpetuals
from tests.test_flows_history import LOOKBACK_DAYS, assert_every_settlement_accounted

pytestmark = pytest.mark.usefixtures("prefect_server")

NEW_VENUES = ("hyperliquid", "kucoinfutures", "binancecoinm", "cryptocom", "phemex")


@pytest.mark.parametrize("name", NEW_VENUES)
async def test_both_collection_flows(tmp_path, monkeypatch, name):
    url = f"sqlite+aiosqlite:///{tmp_path / f'{name}.sqlite'}"
    venue = GeneratedVenue(name, symbols=6, seed=4, now_ms=lambda: FROZEN_MS)
    with EmulatorServer([venue]).running_in_thread() as server:
        configure(monkeypatch, url, server, [name])
        monkeypatch.setenv("PERPFLOW_FUNDING_HISTORY_LOOKBACK_DAYS", str(LOOKBACK_DAYS))
        outcomes = await collect_tickers() + await sweep_funding_rates()
        symbols = perpetuals(server, name)
    assert_ledger_balanced(outcomes)
    assert {(o["dataset"], o["status"]) for o in outcomes} == {
        ("tickers", "ok"), ("funding_rates", "ok"), ("funding_history", "ok")}
    assert {r.symbol for r in by_venue(await fetch_all(url, tickers))[name]} == set(symbols)
    # Every funding rate is stored, or quarantined with the field ccxt did not give as a number
    # (ccxt's phemex parser returns the inverse contract's rates as strings).
    rates = {r.symbol for r in by_venue(await fetch_all(url, funding_rates))[name]}
    refused = {q.symbol: q.reason for q in await fetch_all(url, quarantine)}
    assert rates | set(refused) == set(symbols) and not rates & set(refused)
    assert all("not a finite number" in reason for reason in refused.values()), refused
    assert len(refused) <= (1 if name == "phemex" else 0)
    explained = await assert_every_settlement_accounted(url, venue, symbols)
    assert sum(explained.values()) == 0
