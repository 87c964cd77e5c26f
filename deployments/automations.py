"""Alerts as Prefect automations, notifying through a notification block.

``python -m deployments.automations [--block SLUG/NAME] [--stale-minutes N]`` (or
``await ensure_automations()`` from a setup script) creates or updates, by name:

- ``perpflow: flow run failed`` - any run of the project's flows ends Failed or Crashed;
- ``perpflow: collect-tickers overdue`` / ``perpflow: sweep-funding-rates overdue`` - proactive:
  no run of that flow completed within ``PERPFLOW_ALERT_STALE_MINUTES``;
- ``perpflow: health changed`` - report-health emitted ``perpflow.health.degraded`` or
  ``perpflow.health.recovered``;
- ``perpflow: venue circuit`` - a venue's circuit breaker opened (``perpflow.venue.circuit_opened``:
  the venue is down and skipped) or closed (``perpflow.venue.circuit_closed``: it answers again):
  one alert per outage and one per recovery, while the runs in between complete;
- ``perpflow: stalled run crashed`` - proactive, no notification of its own: a run of the
  project's flows that sent no Prefect flow-run heartbeat (``prefect.flow-run.heartbeat``, sent
  every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds by the process running it) and did not
  finish within ``PERPFLOW_HEALTH_HEARTBEAT_STALE_SECONDS`` is set Crashed, which the failed-run
  alert then reports.

The others send a notification through the block ``PERPFLOW_ALERT_BLOCK`` (``type-slug/name``;
default ``custom-webhook/perpflow-alerts``, created from ``PERPFLOW_ALERT_WEBHOOK_URL`` when it
does not exist yet). Running it again updates the same automations; it never duplicates them.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta
from uuid import UUID

from prefect.automations import AutomationCore, EventTrigger, Posture
from prefect.blocks.core import Block
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState, SendNotification
from pydantic import SecretStr

from perpflow.settings import load_settings

PROJECT_FLOWS = (
    "collect-tickers",
    "sweep-funding-rates",
    "check-data-quality",
    "report-health",
    "maintain-database",
    "run-benchmarks",
)
COLLECTORS = ("collect-tickers", "sweep-funding-rates")
HEALTH_EVENTS = {"perpflow.health.degraded", "perpflow.health.recovered"}
CIRCUIT_EVENTS = {"perpflow.venue.circuit_opened", "perpflow.venue.circuit_closed"}
HEARTBEAT = "prefect.flow-run.heartbeat"
FINAL_EVENTS = {f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Cancelled",
                                                         "Crashed")}
DEFAULT_WEBHOOK_SLUG = CustomWebhookNotificationBlock.get_block_type_slug()

FAILED_BODY = (
    "Flow run {{ flow.name }}/{{ flow_run.name }} ended {{ flow_run.state.name }}: "
    "{{ flow_run.state.message }}\n{{ flow_run|ui_url }}"
)
HEALTH_BODY = (
    "perpflow health {{ event.payload.previous }} -> {{ event.payload.status }}\n"
    "{% for check in event.payload.checks %}{{ check.status }} {{ check.name }}: "
    "{{ check.detail }}\n{% endfor %}"
)


async def notification_block_id(reference: str, webhook_url: SecretStr | None = None) -> UUID:
    """The id of the notification block ``reference`` (``type-slug/name``, e.g.
    ``slack-webhook/ops``). When it does not exist and ``webhook_url`` is given for the default
    type (``custom-webhook``), the block is created, posting ``{"text": subject + body}`` there.

    Raises ``ValueError`` naming ``alert_block`` when the block is missing and cannot be made.
    """
    slug, _, name = reference.partition("/")
    if not slug or not name:
        raise ValueError(f"alert_block: expected 'type-slug/name', got {reference!r}")
    try:
        block = await Block.aload(reference)
    except ValueError:
        if webhook_url is None or slug != DEFAULT_WEBHOOK_SLUG:
            raise ValueError(
                f"alert_block: no notification block {reference!r}; create it (Prefect UI or "
                "code) or set PERPFLOW_ALERT_WEBHOOK_URL to create a custom-webhook block"
            ) from None
        # The URL carries the webhook's token: keep it in the block's secret fields, which the
        # block substitutes into ``url`` only when it sends.
        block = CustomWebhookNotificationBlock(
            name="perpflow alerts",
            url="{{webhook_url}}",
            secrets={"webhook_url": webhook_url.get_secret_value()},
            json_data={"text": "{{subject}}\n{{body}}"},
        )
        await block.asave(name)
    return block._block_document_id


CIRCUIT_BODY = (
    "{{ event.payload.exchange }}: {% if event.event.endswith('opened') %}circuit opened after "
    "{{ event.payload.failures }} consecutive failed steps; the venue is skipped (ledger status "
    "circuit_open) and probed every {{ event.payload.cooldown_seconds }} s. Last error: "
    "{{ event.payload.error }}{% else %}circuit closed: the venue answers again after "
    "{{ event.payload.down_seconds|int }} s down (since {{ event.payload.down_since }})."
    "{% endif %}"
)


def stalled_runs_crashed(
    stale_seconds: float, flows: tuple[str, ...] = PROJECT_FLOWS
) -> AutomationCore:
    """The automation that sets Crashed a run of ``flows`` whose last heartbeat is older than
    ``stale_seconds`` (a proactive trigger per flow run: after a heartbeat, expecting another
    heartbeat or a final state within ``stale_seconds``)."""
    return AutomationCore(
        name="perpflow: stalled run crashed",
        description=f"A flow run sent no heartbeat for {stale_seconds:g} s and did not finish: "
        "its process died (killed, out of memory, machine lost).",
        trigger=EventTrigger(
            after={HEARTBEAT},
            expect={HEARTBEAT, *FINAL_EVENTS},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": list(flows)},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=stale_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                name="Crashed",
                message=f"no heartbeat for {stale_seconds:g} s: the process running this flow "
                "run stopped (marked by the automation 'perpflow: stalled run crashed')",
            )
        ],
    )


def automations(
    block_id: UUID,
    stale_minutes: int,
    flows: tuple[str, ...] = PROJECT_FLOWS,
    heartbeat_stale_seconds: float = 600.0,
) -> list[AutomationCore]:
    """The project's automations (unsaved): alerts notifying through ``block_id``, and the one
    that sets Crashed the runs without a heartbeat for ``heartbeat_stale_seconds``."""

    def notify(subject: str, body: str) -> list[SendNotification]:
        return [SendNotification(block_document_id=block_id, subject=subject, body=body)]

    failed = AutomationCore(
        name="perpflow: flow run failed",
        description="A run of one of the project's flows ended Failed or Crashed.",
        trigger=EventTrigger(
            expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": list(flows)},
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=notify("perpflow: {{ flow.name }} run {{ flow_run.state.name }}", FAILED_BODY),
    )
    overdue = [
        AutomationCore(
            name=f"perpflow: {name} overdue",
            description=f"No run of {name} completed within {stale_minutes} minutes.",
            trigger=EventTrigger(
                expect={"prefect.flow-run.Completed"},
                match_related={"prefect.resource.role": "flow", "prefect.resource.name": name},
                posture=Posture.Proactive,
                threshold=1,
                within=timedelta(minutes=stale_minutes),
            ),
            actions=notify(
                f"perpflow: {name} overdue",
                f"No run of {name} has completed in the last {stale_minutes} minutes.",
            ),
        )
        for name in COLLECTORS
    ]
    health = AutomationCore(
        name="perpflow: health changed",
        description="report-health's overall status got worse (degraded) or better (recovered).",
        trigger=EventTrigger(
            expect=HEALTH_EVENTS,
            match={"prefect.resource.id": "perpflow.health"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=notify("{{ event.event }}: {{ event.payload.status }}", HEALTH_BODY),
    )
    circuit = AutomationCore(
        name="perpflow: venue circuit",
        description="A venue's circuit breaker opened (venue down, skipped) or closed (it "
        "answers again).",
        trigger=EventTrigger(
            expect=CIRCUIT_EVENTS,
            match={"prefect.resource.id": "perpflow.venue.*"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=notify("perpflow: {{ event.payload.exchange }} {{ event.event }}", CIRCUIT_BODY),
    )
    stalled = stalled_runs_crashed(heartbeat_stale_seconds, flows)
    return [failed, *overdue, health, circuit, stalled]


async def ensure_automations(
    block: str | None = None,
    stale_minutes: int | None = None,
    webhook_url: SecretStr | None = None,
) -> dict[str, UUID]:
    """Create or update (by name) the project's automations on the current Prefect API; extra
    automations of the same name are deleted, so running this again never duplicates them.

    ``block``, ``stale_minutes`` and ``webhook_url`` default to ``PERPFLOW_ALERT_BLOCK``,
    ``PERPFLOW_ALERT_STALE_MINUTES`` and ``PERPFLOW_ALERT_WEBHOOK_URL``. Returns ``{name: id}``.
    Raises ``ValueError`` (naming ``alert_block``) when the notification block is missing.
    """
    settings = load_settings()
    block_id = await notification_block_id(
        block or settings.alert_block, webhook_url or settings.alert_webhook_url
    )
    ids = {}
    async with get_client() as client:
        made = automations(
            block_id,
            stale_minutes or settings.alert_stale_minutes,
            heartbeat_stale_seconds=settings.health_heartbeat_stale_seconds,
        )
        for automation in made:
            existing = await client.read_automations_by_name(automation.name)
            if existing:
                await client.update_automation(existing[0].id, automation)
                for duplicate in existing[1:]:
                    await client.delete_automation(duplicate.id)
                ids[automation.name] = existing[0].id
            else:
                ids[automation.name] = await client.create_automation(automation)
    return ids


def main(argv: list[str] | None = None) -> int:
    """Entry point: ensure the automations, print them; exit code 1 on a configuration error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--block", help="notification block as type-slug/name")
    parser.add_argument("--stale-minutes", type=int, help="collector overdue after this long")
    args = parser.parse_args(argv)
    try:
        ids = asyncio.run(ensure_automations(args.block, args.stale_minutes))
    except ValueError as exc:
        print(exc)
        return 1
    for name, automation_id in ids.items():
        print(f"{automation_id}  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
