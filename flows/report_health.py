"""report-health: system, database, freshness, ledger and run-history checks; report and event."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import acreate_markdown_artifact
from prefect.events import emit_event
from prefect.logging import get_run_logger
from prefect.variables import Variable
from sqlalchemy.engine import make_url

from flows.common import resolve_run
from perpflow import health
from perpflow.scope import RunScope
from tasks.health import (
    probe_database,
    probe_freshness,
    probe_ledger,
    probe_system,
    read_run_history,
    read_running_runs,
)
from tasks.store import previous_health_status, write_health_snapshot

REPORT_KEY = "health-report"
STATUS_VARIABLE = "perpflow-health-status"
RESOURCE = {"prefect.resource.id": "perpflow.health", "prefect.resource.name": "perpflow health"}


def _change_event(previous: str | None, status: str) -> str | None:
    """``perpflow.health.degraded`` when ``status`` is worse than ``previous`` (no previous
    snapshot counts as OK), ``perpflow.health.recovered`` when better, else None."""
    before = health.RANK[previous or health.OK]
    after = health.RANK[status]
    if after > before:
        return "perpflow.health.degraded"
    if after < before:
        return "perpflow.health.recovered"
    return None


def status_variable(database_url: str) -> str:
    """Name of the Prefect Variable holding the last overall status for ``database_url``: one per
    database, named by a hash of the URL without its password (so no password can be guessed
    from the name, and rotating it keeps the remembered status)."""
    where = make_url(database_url).set(password=None).render_as_string(hide_password=False)
    return f"{STATUS_VARIABLE}-{hashlib.sha256(where.encode()).hexdigest()[:16]}"


@flow(name="report-health", log_prints=True)
async def report_health(database: str | None = None) -> dict[str, Any]:
    """Check the system (CPU, memory, disk of ``PERPFLOW_HEALTH_DISK_PATH``, this process's RSS),
    the database (round trip, sizes per table and index; on PostgreSQL sessions, cache hit
    ratio, long queries, lock waits), freshness per (venue, dataset), the collection ledger per
    venue (last hour and day; rows unaccounted for must be 0) and the Prefect run history of the
    last 24 h per deployment/flow (runs, failure rate, late runs, duration p50/p95), the liveness of
    running flow runs (CRIT: no heartbeat for ``PERPFLOW_HEALTH_HEARTBEAT_STALE_SECONDS``; WARN: no
    task-run progress for ``PERPFLOW_HEALTH_PROGRESS_STALE_SECONDS``); classify each
    OK/WARN/CRIT against the ``PERPFLOW_HEALTH_*`` thresholds.

    ``database``: name of a ``perpflow-market-database`` block (default:
    ``PERPFLOW_DATABASE_URL``). Publishes the ``health-report`` markdown artifact (statuses
    first), writes a ``health_snapshots`` row per check plus ``overall``, and emits
    ``perpflow.health.degraded`` / ``perpflow.health.recovered`` (payload: previous and current
    status, the non-OK checks) when the overall status changed since the previous run. The last
    status is kept in a Prefect Variable (``status_variable``), so an unreachable database is
    announced once and its recovery too; without that Variable (a first run) the newest stored
    snapshot stands in.
    Returns ``{'status', 'previous', 'event', 'checks': [check dicts]}``.
    """
    ctx = await resolve_run(None, database)
    async with RunScope():  # one engine for the run's tasks
        settings, url = ctx.settings, ctx.database_url
        now = datetime.now(UTC)
        checks = probe_system(Path(settings.health_disk_path), settings)
        database_checks = await probe_database(url, settings)
        checks += database_checks
        reachable = database_checks[0].value is not None
        if reachable:
            checks += await probe_freshness(url, settings, now)
            checks += await probe_ledger(url, settings, now)
            checks += await health.certificate_checks(url.get_secret_value(), now)
        else:
            checks.append(
                health.Check("freshness", health.CRIT, detail="not checked: database unreachable")
            )
        checks += health.run_history_checks(
            await read_run_history(now - timedelta(days=1), settings.health_late_seconds), settings
        )
        checks += health.liveness_checks(await read_running_runs(), settings, now)
        status = health.worst(checks)
        remembered = status_variable(url.get_secret_value())
        previous = await Variable.aget(remembered)
        if previous is None and reachable:
            previous = await previous_health_status(url, ctx.run_id)
        report = health.render_markdown(status, previous, checks, now)
        await acreate_markdown_artifact(
            markdown=report, key=REPORT_KEY, description=f"perpflow health: {status}"
        )
        if reachable:
            await write_health_snapshot(url, ctx.run_id, health.snapshot_rows(status, checks, now))
        await Variable.aset(remembered, status, overwrite=True)
        event = _change_event(previous, status)
        if event:
            failing = [asdict(c) for c in checks if c.status != health.OK]
            emit_event(
                event=event,
                resource=RESOURCE,
                related=[
                    {
                        "prefect.resource.id": f"prefect.flow-run.{ctx.run_id}",
                        "prefect.resource.role": "flow-run",
                    }
                ],
                payload={"previous": previous or health.OK, "status": status, "checks": failing},
            )
            get_run_logger().warning(
                "health %s -> %s: emitted %s", previous or health.OK, status, event
            )
        return {
            "status": status,
            "previous": previous,
            "event": event,
            "checks": [asdict(c) for c in checks],
        }


if __name__ == "__main__":
    asyncio.run(report_health())
