"""Secrets are never printed: every secret-bearing input through every validation path.

Each case puts a unique secret string into a configuration input that is invalid (a misspelled
field, an object where a list is expected, an unparsable URL, a credential in ``ccxt_config``, ...)
and asserts that the error names the field, says the value is hidden and does not contain the
secret. ``tests/test_secrets_flows.py`` runs the same inputs through failing flow runs.
"""

from __future__ import annotations

import json
import logging

import ccxt
import pytest

from blocks import ExchangeBlock
from perpflow.exchanges import _client_config
from perpflow.settings import (
    CREDENTIALS,
    ConfigError,
    ExchangeConfig,
    check_database_url,
    exchange_config,
    load_settings,
    mask_url,
    unknown_variables,
)

# (case, environment, secret strings, words the error must contain)
ENV_CASES = [
    (
        "misspelled venue field",
        {"PERPFLOW_EXCHANGES": json.dumps([{"id": "okx", "apikey": "AKIA-S1-SECRET"}])},
        ["AKIA-S1-SECRET"],
        ["exchanges.0.apikey", "value hidden: unknown field"],
    ),
    (
        "exchanges as an object",
        {"PERPFLOW_EXCHANGES": json.dumps({"id": "okx", "api_key": "S2-KEY", "secret": "S2-SEC"})},
        ["S2-KEY", "S2-SEC"],
        ["exchanges", "value hidden: a JSON object"],
    ),
    (
        "libpq keyword database URL",
        {"PERPFLOW_DATABASE_URL": "host=db user=perpflow password=S3-PW dbname=perpflow"},
        ["S3-PW"],
        ["database_url", "value hidden: not a parsable URL"],
    ),
    (
        "database URL without ://",
        {"PERPFLOW_DATABASE_URL": "postgresql+asyncpg:perpflow:S4-PW@db/perpflow"},
        ["S4-PW"],
        ["database_url", "value hidden: not a parsable URL"],
    ),
    (
        "extra credentials beside a bad field",
        {
            "PERPFLOW_EXCHANGES": json.dumps(
                [{"id": "okx", "password": "S5-PASS", "uid": "S5-UID", "private_key": "S5-PK",
                  "api_url": "nope"}]
            )
        },
        ["S5-PASS", "S5-UID", "S5-PK"],
        ["exchanges.0.api_url = 'nope'"],
    ),
    (
        "credential in ccxt_config",
        {"PERPFLOW_EXCHANGES": json.dumps([{"id": "okx", "ccxt_config": {"password": "S6-PASS"}}])},
        ["S6-PASS"],
        ["ccxt_config.password", "secret field 'password'"],
    ),
    (
        "bench URL in libpq form",
        {"PERPFLOW_BENCH_DATABASE_URL": "host=x user=u password=S7-PW"},
        ["S7-PW"],
        ["bench_database_url", "value hidden"],
    ),
    (
        "webhook URL and a misspelled variable beside a bad field",
        {
            "PERPFLOW_ALERT_WEBHOOK_URL": "https://hooks.example/S8-HOOK",
            "PERPFLOW_DATABSE_URL": "postgresql+asyncpg://u:S8-PW@h/db",
            "PERPFLOW_DASK_WORKERS": "0",
        },
        ["S8-HOOK", "S8-PW"],
        ["dask_workers = '0'"],
    ),
    (
        "unsupported driver with password and query password",
        {"PERPFLOW_DATABASE_URL": "mysql+aiomysql://u:S9-PW@h/db?password=S9-Q"},
        ["S9-PW", "S9-Q"],
        ["database_url", "mysql+aiomysql", "***"],
    ),
    (
        "truncated JSON",
        {"PERPFLOW_EXCHANGES": '[{"id": "okx", "api_key": "S10-KEY"'},
        ["S10-KEY"],
        ["exchanges"],
    ),
    (
        "credential of the wrong type",
        {"PERPFLOW_EXCHANGES": json.dumps([{"id": "okx", "token": {"value": "S11-TOKEN"}}])},
        ["S11-TOKEN"],
        ["exchanges.0.token", "value hidden: a secret field"],
    ),
]


def secret_environment(monkeypatch, env: dict[str, str]) -> None:
    """Set ``env`` (and nothing else of perpflow's) for one case."""
    for name in ("PERPFLOW_EXCHANGES", "PERPFLOW_DATABASE_URL", "PERPFLOW_PROFILE",
                 "PERPFLOW_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("case, env, secrets, words", ENV_CASES, ids=[c[0] for c in ENV_CASES])
def test_settings_errors_name_the_field_and_hide_the_secret(
    monkeypatch, caplog, case, env, secrets, words
):
    secret_environment(monkeypatch, env)
    with caplog.at_level(logging.WARNING, logger="perpflow.settings"):
        with pytest.raises(ConfigError) as exc_info:
            load_settings()
    text = str(exc_info.value) + caplog.text
    for word in words:
        assert word in text
    for secret in secrets:
        assert secret not in text
        assert secret not in repr(exc_info.value)
    # nothing chained: a traceback shows no underlying error holding the input
    assert exc_info.value.__cause__ is None and exc_info.value.__suppress_context__


def test_a_misspelled_variable_is_reported_by_name_only(monkeypatch, caplog):
    monkeypatch.setenv("PERPFLOW_DATABSE_URL", "postgresql+asyncpg://u:S12-PW@h/db")
    monkeypatch.setenv("PERPFLOW_PROFILE_", "x")
    assert {"PERPFLOW_DATABSE_URL", "PERPFLOW_PROFILE_"} <= set(unknown_variables())
    assert "PERPFLOW_DATABASE_URL" not in unknown_variables({"PERPFLOW_DATABASE_URL": "x"})
    with caplog.at_level(logging.WARNING, logger="perpflow.settings"):
        load_settings()
    assert "unknown environment variable PERPFLOW_DATABSE_URL" in caplog.text
    assert "S12-PW" not in caplog.text


@pytest.mark.parametrize(
    "url, secret",
    [
        ("host=db user=perpflow password=S13-PW dbname=perpflow", "S13-PW"),
        ("postgresql+asyncpg:perpflow:S14-PW@db/perpflow", "S14-PW"),
        ("postgresql+asyncpg//perpflow:S15-PW@db/perpflow", "S15-PW"),
    ],
)
def test_an_unparsable_url_is_never_shown(url, secret):
    with pytest.raises(ValueError) as exc_info:
        check_database_url(url)
    assert "database_url: not a SQLAlchemy URL" in str(exc_info.value)
    assert secret not in str(exc_info.value) and secret not in mask_url(url)


def test_a_shown_url_masks_password_and_query_values():
    shown = mask_url("postgresql+asyncpg://u:S16-PW@h:5432/db?password=S16-Q&ssl=require")
    assert shown.startswith("postgresql+asyncpg://u:***@h:5432/db?")
    assert "S16" not in shown and "require" not in shown


def test_credential_fields_are_ccxts_required_credentials():
    """Every key of ccxt's ``requiredCredentials`` is a secret field, passed under its name."""
    assert set(CREDENTIALS.values()) == set(ccxt.Exchange.requiredCredentials)
    assert set(ccxt.okx().requiredCredentials) == set(CREDENTIALS.values())
    values = {field: f"{field}-S17" for field in CREDENTIALS}
    venue = ExchangeConfig(id="okx", **values)
    config = _client_config(venue)
    assert {config[key] for key in CREDENTIALS.values()} == set(values.values())
    assert not any(value in venue.model_dump_json() + repr(venue) for value in values.values())
    client = getattr(ccxt, "okx")(config)
    assert client.password == "password-S17" and client.privateKey == "private_key-S17"


@pytest.mark.parametrize("key", ["password", "apiKey", "privateKey", "private_key", "UID"])
def test_credentials_are_refused_in_ccxt_config(key):
    with pytest.raises(ConfigError) as exc_info:
        exchange_config({"id": "okx", "ccxt_config": {key: "S18-SECRET"}}, "block okx: ")
    assert "block okx: ccxt_config = (value hidden: a JSON object or list)" in str(exc_info.value)
    assert f"ccxt_config.{key}: a credential" in str(exc_info.value)
    assert "S18-SECRET" not in str(exc_info.value)


def test_block_credentials_are_secret_fields_and_reach_the_venue():
    values = {field: f"{field}-S19" for field in CREDENTIALS}
    block = ExchangeBlock(exchange_id="okx", symbols=["BTC/*"], **values)
    assert set(CREDENTIALS) <= set(block.model_fields)
    assert not any(value in repr(block) or value in block.model_dump_json()
                   for value in values.values())
    venue = block.venue()
    assert {getattr(venue, f).get_secret_value() for f in CREDENTIALS} == set(values.values())
    again = ExchangeBlock.from_venue(venue)
    assert again.venue() == venue


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"api_url": "nope"}, ["block okx: api_url = 'nope'"]),
        ({"contract_types": ["sideways"]}, ["block okx: contract_types.0 = 'sideways'"]),
        ({"ccxt_config": {"password": "x"}}, ["block okx: ccxt_config", "secret field 'password'"]),
    ],
)
def test_a_bad_block_value_names_the_block_and_field(fields, words):
    secrets = {"api_key": "S20-KEY", "password": "S20-PASS", "wallet_address": "S20-W"}
    block = ExchangeBlock(exchange_id="okx", **secrets, **fields)
    block._block_document_name = "okx"
    with pytest.raises(ConfigError) as exc_info:
        block.venue()
    for word in words:
        assert word in str(exc_info.value)
    assert not any(secret in str(exc_info.value) for secret in secrets.values())
