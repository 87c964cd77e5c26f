"""Bad configuration fails at start with an error naming the field and the value."""

from __future__ import annotations

import json

import pytest
import yaml
from pydantic import ValidationError

from blocks import ExchangeBlock
from perpflow.exchanges import build_client, rewrite_api_urls
from perpflow.settings import ConfigError, ExchangeConfig, Settings, load_settings
from tests.conftest import ROOT


def _error_text(exc_info) -> str:
    return str(exc_info.value)


def test_defaults_need_no_setup(monkeypatch):
    for name in ("PERPFLOW_DATABASE_URL", "PERPFLOW_EXCHANGES"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.database_url.get_secret_value().startswith("sqlite+aiosqlite:///")
    assert [venue.id for venue in settings.enabled_exchanges] == ["binanceusdm", "bybit", "okx"]


def test_unknown_ccxt_id_names_field_and_value(monkeypatch):
    monkeypatch.setenv("PERPFLOW_EXCHANGES", json.dumps([{"id": "notanexchange"}]))
    with pytest.raises(ConfigError) as exc_info:
        load_settings()
    assert "exchanges.0.id = 'notanexchange'" in _error_text(exc_info)


@pytest.mark.parametrize(
    "url, words",
    [
        ("mysql+aiomysql://u:topsecret@h/db", ["database_url", "mysql+aiomysql"]),
        ("not a url", ["database_url", "(value hidden: not a parsable URL)"]),
        ("sqlite+aiosqlite://", ["database_url", "file path"]),
    ],
)
def test_malformed_database_url_is_refused_without_leaking_password(monkeypatch, url, words):
    monkeypatch.setenv("PERPFLOW_DATABASE_URL", url)
    with pytest.raises(ConfigError) as exc_info:
        load_settings()
    for word in words:
        assert word in _error_text(exc_info)
    assert "topsecret" not in _error_text(exc_info) and "not a url" not in _error_text(exc_info)


@pytest.mark.parametrize("name", ["PERPFLOW_FUNDING_HISTORY_LOOKBACK_DAYS", "PERPFLOW_DASK_WORKERS"])
def test_non_positive_value_is_refused(monkeypatch, name):
    monkeypatch.setenv(name, "0")
    with pytest.raises(ConfigError) as exc_info:
        load_settings()
    field = name.removeprefix("PERPFLOW_").lower()
    assert f"{field} = '0': Input should be greater than 0" in _error_text(exc_info)


def test_credentials_never_appear_in_errors(monkeypatch):
    bad = [{"id": "okx", "api_key": "k-SECRET", "secret": "s-SECRET", "api_url": "nope"}]
    monkeypatch.setenv("PERPFLOW_EXCHANGES", json.dumps(bad))
    with pytest.raises(ConfigError) as exc_info:
        load_settings()
    assert "exchanges.0.api_url = 'nope'" in _error_text(exc_info)
    assert "SECRET" not in _error_text(exc_info)


def test_malformed_api_url_is_refused():
    with pytest.raises(ValidationError) as exc_info:
        ExchangeConfig(id="okx", api_url="127.0.0.1:8765/okx")
    assert "api_url" in _error_text(exc_info) and "'127.0.0.1:8765/okx'" in _error_text(exc_info)


def test_block_fields_become_a_validated_venue():
    block = ExchangeBlock(exchange_id="okx", symbols=["BTC/*"], api_key="k-123", secret="s-456")
    venue = ExchangeConfig(**block.venue_fields())
    assert venue.symbols == ("BTC/*",) and venue.api_key.get_secret_value() == "k-123"
    assert "k-123" not in repr(venue) and "s-456" not in venue.model_dump_json()
    with pytest.raises(ValidationError, match="unknown ccxt exchange id 'nope'"):
        ExchangeConfig(**ExchangeBlock(exchange_id="nope").venue_fields())


def test_api_url_override_rewrites_every_endpoint_and_keeps_paths():
    client = build_client(ExchangeConfig(id="binanceusdm", api_url="http://127.0.0.1:9/b"))
    api = client.urls["api"]
    assert api["fapiPublic"] == "http://127.0.0.1:9/b/fapi/v1"
    assert all(url.startswith("http://127.0.0.1:9/b") for url in api.values())
    assert rewrite_api_urls({"rest": "https://{hostname}"}, "http://h:1/okx/") == {"rest": "http://h:1/okx"}
    with pytest.raises(ValueError, match="api_url"):
        rewrite_api_urls("https://x", "ftp://nope")


def test_freshness_cadence_defaults_match_the_deployment_schedules():
    """report-health judges freshness by the collectors' cadence; prefect.yaml schedules them."""
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    intervals = {
        d["entrypoint"].rsplit(":", 1)[1]: d["schedules"][0].get("interval")
        for d in spec["deployments"]
    }
    settings = Settings()
    assert intervals["collect_tickers"] == settings.ticker_interval_seconds
    assert intervals["sweep_funding_rates"] == settings.funding_interval_seconds
