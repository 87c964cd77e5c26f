"""Health tasks: the probes of ``perpflow.health`` with timeouts, and the run history read from
the Prefect API (flow runs of the last day per deployment, else per flow)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort, TaskRunSort
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventResourceFilter,
)
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from perpflow import health, store
from perpflow.settings import Settings

PROBE: dict[str, Any] = {"cache_policy": NO_CACHE, "timeout_seconds": 120}
PAGE = 200
MAX_RUNS = 20_000


@task(name="probe-system", **PROBE)
def probe_system(data_dir: Path, settings: Settings) -> list[health.Check]:
    """CPU, memory, disk of ``data_dir``, this process's RSS."""
    return health.system_checks(data_dir, settings)


@task(name="probe-database", **PROBE)
async def probe_database(url: SecretStr, settings: Settings) -> list[health.Check]:
    """Reachability, round trip, sizes and (PostgreSQL) server statistics; never raises."""
    async with store.run_engine(url.get_secret_value()) as engine:
        return await health.database_checks(engine, settings, _secrets(url))


@task(name="probe-freshness", **PROBE)
async def probe_freshness(url: SecretStr, settings: Settings, now: datetime) -> list[health.Check]:
    """Age of the newest row per (venue, dataset) against its schedule."""
    async with store.run_engine(url.get_secret_value()) as engine:
        return await health.freshness_checks(engine, settings, now)


@task(name="probe-ledger", **PROBE)
async def probe_ledger(url: SecretStr, settings: Settings, now: datetime) -> list[health.Check]:
    """Collection-ledger aggregates per venue over the last hour and day."""
    async with store.run_engine(url.get_secret_value()) as engine:
        return await health.ledger_checks(engine, settings, now)


def _secrets(url: SecretStr) -> list[str]:
    password = make_url(url.get_secret_value()).password
    return [url.get_secret_value(), str(password or "")]


def _record(run: FlowRun, names: dict, late_after: timedelta) -> health.RunRecord:
    late = run.state_name == "Late" or bool(
        run.start_time
        and run.expected_start_time
        and run.start_time - run.expected_start_time > late_after
    )
    state = run.state_type.value if run.state_type else "UNKNOWN"
    finished = state in health.FAILED_STATES or state == "COMPLETED"
    duration = run.total_run_time.total_seconds() if finished else None
    name = names.get(run.deployment_id) or names.get(run.flow_id) or str(run.flow_id)
    return health.RunRecord(name, state, late, duration)


@task(
    name="read-run-history",
    cache_policy=NO_CACHE,
    timeout_seconds=120,
    retries=2,
    retry_delay_seconds=5,
)
async def read_run_history(since: datetime, late_seconds: float) -> list[health.RunRecord]:
    """Flow runs expected to start between ``since`` and now (Prefect API, paged, at most 20 000;
    runs the scheduler has already made for the future are left out), each
    named by its deployment (else its flow); late when started more than ``late_seconds`` after
    its expected start, or in the Late state."""
    async with get_client() as client:
        runs: list[FlowRun] = []
        window = FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(
            after_=since, before_=datetime.now(UTC)
        ))
        while len(runs) < MAX_RUNS:
            page = await client.read_flow_runs(
                flow_run_filter=window,
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=PAGE,
                offset=len(runs),
            )
            runs += page
            if len(page) < PAGE:
                break
        # A handful of flows and deployments: read each by id.
        flows = [await client.read_flow(i) for i in {run.flow_id for run in runs}]
        deployments = [
            await client.read_deployment(i)
            for i in {r.deployment_id for r in runs if r.deployment_id}
        ]
    flow_names = {f.id: f.name for f in flows}
    names = flow_names | {
        d.id: f"{flow_names.get(d.flow_id, d.flow_id)}/{d.name}" for d in deployments
    }
    return [_record(run, names, timedelta(seconds=late_seconds)) for run in runs]


HEARTBEAT = "prefect.flow-run.heartbeat"


async def _last_heartbeat(client, run: FlowRun) -> datetime | None:
    since = run.start_time or run.expected_start_time or datetime.now(UTC) - timedelta(days=1)
    page = await client.read_events(
        filter=EventFilter(
            event=EventNameFilter(name=[HEARTBEAT]),
            occurred=EventOccurredFilter(since=since),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{run.id}"]),
            order="DESC",
        ),
        limit=1,
    )
    return page.events[0].occurred if page.events else None


async def _last_progress(client, run: FlowRun) -> datetime | None:
    runs = await client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
        sort=TaskRunSort.EXPECTED_START_TIME_DESC,
        limit=PAGE,
    )
    moments = [t.state.timestamp for t in runs if t.state and t.state.timestamp]
    return max(moments, default=None)


@task(name="read-running-runs", cache_policy=NO_CACHE, timeout_seconds=120, retries=2,
      retry_delay_seconds=5)
async def read_running_runs() -> list[health.RunningRun]:
    """Every flow run in the RUNNING state (Prefect API, at most ``PAGE``) with its newest
    heartbeat (``prefect.flow-run.heartbeat`` event) and newest task-run state change."""
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
            ),
            limit=PAGE,
        )
        flows = {i: (await client.read_flow(i)).name for i in {run.flow_id for run in runs}}
        found = []
        for run in runs:
            started = run.start_time or run.expected_start_time or datetime.now(UTC)
            found.append(health.RunningRun(
                flows.get(run.flow_id, str(run.flow_id)), run.name, str(run.id), started,
                await _last_heartbeat(client, run), await _last_progress(client, run),
            ))
    return found
