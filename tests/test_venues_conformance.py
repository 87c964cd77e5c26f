"""Every ccxt venue that lists perpetual swaps (computed from ccxt at test time, no network): the
project's own client for it builds, and each dataset's decision follows from ccxt's ``has`` flags;
market loading is limited to perpetual types; docs/venues.md is the generated table."""

from __future__ import annotations

import asyncio

import ccxt
import pytest

from perpflow import capabilities
from perpflow.exchanges import build_client, venue_profile
from perpflow.settings import ConfigError, ExchangeConfig, load_settings
from tests.conftest import ROOT

VENUES = capabilities.perpetual_venues()
FLAGS = {
    "fetch_tickers": "fetchTickers", "fetch_ticker": "fetchTicker",
    "fetch_funding_rates": "fetchFundingRates", "fetch_funding_rate": "fetchFundingRate",
    "fetch_funding_rate_history": "fetchFundingRateHistory",
}


def test_the_venue_list_comes_from_ccxt():
    assert len(VENUES) >= 40
    assert {"binanceusdm", "bybit", "okx", "hyperliquid", "deribit", "phemex"} <= set(VENUES)
    assert "kraken" not in VENUES  # spot only in ccxt


@pytest.mark.parametrize("venue_id", VENUES)
def test_each_dataset_decision_follows_ccxt(venue_id):
    client = build_client(ExchangeConfig(id=venue_id))
    try:
        profile = venue_profile(client, ExchangeConfig(id=venue_id))
        has = client.has
        for dataset, plan in profile.plans.items():
            for method in (plan.method, plan.fallback):
                if method is not None:
                    assert callable(getattr(client, method)), (dataset, method)
                    assert has.get(FLAGS[method]), (dataset, method)
        tickers = profile.plans["tickers"]
        assert tickers.mode == ("bulk" if has.get("fetchTickers") else
                                "per_symbol" if has.get("fetchTicker") else "unsupported")
        rates = profile.plans["funding_rates"]
        assert rates.mode == ("bulk" if has.get("fetchFundingRates") else
                              "per_symbol" if has.get("fetchFundingRate") else "unsupported")
        history = profile.plans["funding_history"]
        assert history.supported is bool(has.get("fetchFundingRateHistory"))
        # Market loading: the client asks only for types that can hold perpetuals.
        types = profile.market_types
        if types is not None:
            assert client.options["fetchMarkets"]["types"] == types
            named = types if isinstance(types, list) else [k for k, on in types.items() if on]
            assert not {"spot", "option", "margin"} & set(named), named
        assert profile.budget_seconds(300) > profile.budget_seconds(1) > 0
    finally:
        asyncio.run(client.close())


def test_contract_types_choose_the_market_lists():
    only_linear = ExchangeConfig(id="binance", contract_types=("linear",))
    client = build_client(only_linear)
    assert client.options["fetchMarkets"]["types"] == ["linear"]
    asyncio.run(client.close())
    coinm = build_client(ExchangeConfig(id="binancecoinm", contract_types=("linear",)))
    assert coinm.options["fetchMarkets"]["types"] == []  # nothing can be selected: flagged empty
    asyncio.run(coinm.close())


def test_a_venue_without_perpetuals_is_a_configuration_error(monkeypatch):
    monkeypatch.setenv("PERPFLOW_EXCHANGES", '[{"id": "kraken"}]')
    with pytest.raises(ConfigError, match="exchanges.0.id = 'kraken'.*lists no perpetual swaps"):
        load_settings()
    monkeypatch.setenv("PERPFLOW_EXCHANGES", '[{"id": "okx", "datasets": ["tickerz"]}]')
    with pytest.raises(ConfigError, match="exchanges.0.datasets"):
        load_settings()


def test_docs_venues_is_the_generated_table():
    assert (ROOT / "docs" / "venues.md").read_text() == capabilities.venues_markdown(), (
        "docs/venues.md is stale: python -m perpflow.capabilities > docs/venues.md"
    )
    assert f"ccxt {ccxt.__version__}" in capabilities.venues_markdown()
