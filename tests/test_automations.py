"""The alert automations on a test Prefect server: created once, updated in place on a rerun."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client
from prefect.client.schemas.sorting import AutomationSort
from pydantic import SecretStr

from deployments.automations import ensure_automations, main

pytestmark = pytest.mark.usefixtures("prefect_server")

NAMES = {
    "perpflow: flow run failed",
    "perpflow: collect-tickers overdue",
    "perpflow: sweep-funding-rates overdue",
    "perpflow: health changed",
    "perpflow: venue circuit",
    "perpflow: stalled run crashed",
}
# Automations that act rather than notify.
ACTING = {"perpflow: stalled run crashed"}


async def _project_automations():
    async with get_client() as client:
        return [
            a
            for a in await client.read_automations(sort=AutomationSort.NAME_ASC, limit=200)
            if a.name.startswith("perpflow: ")
        ]


@pytest.fixture
async def removed_afterwards():
    """Delete the project's automations after the test (they would act on later flow runs)."""
    yield
    async with get_client() as client:
        for automation in await _project_automations():
            await client.delete_automation(automation.id)


async def test_setup_twice_creates_each_automation_once(monkeypatch, removed_afterwards):
    monkeypatch.setenv("PERPFLOW_ALERT_BLOCK", "custom-webhook/perpflow-alerts-test")
    hook = SecretStr("http://127.0.0.1:9/perpflow-alerts")
    first = await ensure_automations(webhook_url=hook)
    second = await ensure_automations(webhook_url=hook, stale_minutes=30)
    assert set(first) == NAMES and first == second

    found = await _project_automations()
    assert sorted(a.name for a in found) == sorted(NAMES)
    by_name = {a.name: a for a in found}
    block = await CustomWebhookNotificationBlock.aload("perpflow-alerts-test")
    # The URL (with its token) is kept only in the block's secret fields.
    assert block.url == "{{webhook_url}}"
    assert block.secrets.get_secret_value() == {"webhook_url": hook.get_secret_value()}
    for automation in found:
        assert automation.enabled
        (action,) = automation.actions
        if automation.name not in ACTING:
            assert action.block_document_id == block._block_document_id
    failed = by_name["perpflow: flow run failed"].trigger
    assert failed.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
    assert "collect-tickers" in failed.match_related["prefect.resource.name"]
    overdue = by_name["perpflow: collect-tickers overdue"].trigger
    assert (overdue.posture, overdue.within, overdue.expect) == (
        "Proactive",
        timedelta(minutes=30),
        {"prefect.flow-run.Completed"},
    )
    health = by_name["perpflow: health changed"].trigger
    assert health.expect == {"perpflow.health.degraded", "perpflow.health.recovered"}
    circuit = by_name["perpflow: venue circuit"].trigger
    assert circuit.expect == {"perpflow.venue.circuit_opened", "perpflow.venue.circuit_closed"}
    stalled = by_name["perpflow: stalled run crashed"]
    assert stalled.trigger.posture == "Proactive" and stalled.actions[0].type == "change-flow-run-state"


def test_a_missing_block_is_named(monkeypatch, capsys):
    monkeypatch.setenv("PERPFLOW_ALERT_BLOCK", "slack-webhook/nowhere")
    assert main([]) == 1
    assert "alert_block: no notification block 'slack-webhook/nowhere'" in capsys.readouterr().out
