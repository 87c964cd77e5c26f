"""Secrets never reach Prefect: each secret-bearing bad input fails a real flow run, then the
run's logs, state message, events, artifacts, the failed-run alert's rendered message and the
Prefect server's database file are searched for the secret."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.events.filters import EventFilter, EventRelatedFilter
from prefect.logging.handlers import APILogHandler
from prefect.server.events.actions import JinjaTemplateAction
from prefect.server.utilities.user_templates import render_user_template
from prefect.settings import PREFECT_API_DATABASE_CONNECTION_URL
from sqlalchemy.engine import make_url

from blocks import ExchangeBlock, MarketDatabase
from deployments.automations import FAILED_BODY
from flows.collect_tickers import collect_tickers
from tests.test_secrets import ENV_CASES, secret_environment

pytestmark = pytest.mark.usefixtures("prefect_server")


async def _block_case(kind: str) -> tuple[dict, list[str]]:
    """Save a bad block holding secrets; return the flow's arguments and the secrets."""
    name = f"secrets-{uuid.uuid4().hex[:8]}"
    if kind == "exchange":
        secrets = ["B1-KEY", "B1-PASS", "B1-PK"]
        block: Block = ExchangeBlock(exchange_id="okx", api_url="nope", api_key=secrets[0],
                                     password=secrets[1], private_key=secrets[2])
        args = {"exchanges": [name]}
    else:
        secrets = ["B2-PW"]
        block = MarketDatabase(url="host=db user=perpflow password=B2-PW dbname=perpflow")
        args = {"database": name}
    await block.asave(name)
    return args, secrets


async def _failed_run(args: dict):
    state = await collect_tickers(**args, return_state=True)
    assert state.is_failed(), state
    await APILogHandler.aflush()
    return state.state_details.flow_run_id


async def _run_texts(flow_run_id) -> list[str]:
    """Everything Prefect kept about the run, as text: logs, state messages, events (waiting for
    the Failed event to be stored), artifacts and the failed-run alert's rendered message."""
    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
        flow = await client.read_flow(run.flow_id)
        logs = await client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200
        )
        states = await client.read_flow_run_states(flow_run_id)
        artifacts = await client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
        related = EventFilter(related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]))
        for _ in range(60):
            events = (await client.read_events(filter=related, limit=50)).events
            events += (await client.read_events(filter=EventFilter(
                resource={"id": [f"prefect.flow-run.{flow_run_id}"]}), limit=50)).events
            if any(e.event == "prefect.flow-run.Failed" for e in events):
                break
            await asyncio.sleep(0.5)
        else:
            pytest.fail("the run's Failed event was never stored")
    JinjaTemplateAction._register_filters_if_needed()
    alert = await render_user_template(FAILED_BODY, {"flow": flow, "flow_run": run})
    assert "ended Failed: " in alert and run.state.message in alert
    return [
        *(log.message for log in logs),
        *(f"{state.name} {state.message}" for state in states),
        *(event.model_dump_json() for event in events),
        *(artifact.model_dump_json() for artifact in artifacts),
        alert,
    ]


def _server_database_bytes() -> bytes:
    path = Path(make_url(PREFECT_API_DATABASE_CONNECTION_URL.value()).database)
    return b"".join(
        p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists()
    )


CASES = [(case, env, secrets) for case, env, secrets, _ in ENV_CASES] + [
    ("bad exchange block", "exchange", None),
    ("bad database block", "database", None),
]


@pytest.mark.parametrize("case, env, secrets", CASES, ids=[c[0] for c in CASES])
async def test_no_secret_reaches_prefect(monkeypatch, tmp_path, case, env, secrets):
    monkeypatch.chdir(tmp_path)  # the default SQLite file, if any, goes to a scratch directory
    if isinstance(env, dict):
        secret_environment(monkeypatch, env)
        args = {}
    else:
        secret_environment(monkeypatch, {})
        args, secrets = await _block_case(env)
    flow_run_id = await _failed_run(args)
    texts = await _run_texts(flow_run_id)
    # the run failed on the configuration, and said so
    assert any("ConfigError" in text or "database_url:" in text for text in texts)
    database = _server_database_bytes()
    for secret in secrets:
        assert not [text for text in texts if secret in text], case
        assert secret.encode() not in database, case


async def test_credentials_of_a_valid_venue_stay_hidden_when_the_run_fails(monkeypatch, tmp_path):
    """A valid configuration with every kind of credential, whose venue cannot be reached: the
    run fails at the fetch, and its ledger artifact, logs and events hold no credential."""
    secrets = {"api_key": "V1-KEY", "secret": "V1-SEC", "password": "V1-PASS", "uid": "V1-UID"}
    venue = {"id": "okx", "symbols": ["BTC/USDT:USDT"], "api_url": "http://127.0.0.1:9/okx",
             **secrets}
    secret_environment(monkeypatch, {
        "PERPFLOW_EXCHANGES": json.dumps([venue]),
        "PERPFLOW_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'm.sqlite'}",
        "PERPFLOW_EXCHANGE_RETRIES": "0",
    })
    flow_run_id = await _failed_run({})
    texts = await _run_texts(flow_run_id)
    database = _server_database_bytes()
    for secret in secrets.values():
        assert not [text for text in texts if secret in text]
        assert secret.encode() not in database
