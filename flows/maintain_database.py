"""maintain-database: measure -> decide -> act -> measure again, with a report (daily)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from prefect import flow
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    aupdate_progress_artifact,
)
from prefect.runtime import flow_run

from flows.common import database_url
from perpflow.maintenance import Limits, Policy, decide, markdown_report, report_rows
from perpflow.scope import RunScope
from perpflow.settings import load_settings
from tasks.maintenance import measure_database, record_maintenance, run_action
from tasks.store import prepare_database


class MaintenanceStepsFailed(RuntimeError):
    """Raised at the end of a run (after the report) when an action failed for a reason other
    than a timeout, so that the run ends Failed for the UI and automations."""


REPORT_KEY = "maintain-database-report"
PROGRESS_KEY = "maintain-database-progress"


@flow(name="maintain-database", log_prints=True)
async def maintain_database(
    database: str | None = None,
    dry_run: bool = False,
    integrity: bool = True,
    vacuum: bool = True,
    analyze: bool = True,
    reindex: bool = True,
    retention: bool = True,
    partitions: bool = True,
    checkpoint: bool = True,
) -> list[dict[str, Any]]:
    """Look after the market database: measure every table and index, decide per object from
    the ``PERPFLOW_MAINTENANCE_*`` thresholds, act, measure again.

    ``database``: name of a ``perpflow-market-database`` block (default ``PERPFLOW_DATABASE_URL``).
    ``dry_run``: measure and report what would be done, change nothing. The other flags switch a
    step off: ``integrity`` (SQLite quick_check), ``vacuum``, ``analyze``, ``reindex`` (with the
    drop of invalid reindex leftovers), ``retention``, ``partitions`` (PostgreSQL days ahead),
    ``checkpoint`` (SQLite WAL). Returns the report rows (one per object, sizes in bytes, bloat as
    fractions); publishes them as the ``maintain-database-report`` markdown artifact and stores
    them in ``maintenance_results``. A step that timed out is reported and left for the next run;
    one that failed otherwise raises ``MaintenanceStepsFailed`` once the report is published.
    """
    settings = load_settings()
    url = await database_url(settings.database_url, database)
    limits, policy = Limits.from_settings(settings), Policy.from_settings(settings)
    flags = {
        "integrity": integrity,
        "vacuum": vacuum,
        "analyze": analyze,
        "reindex": reindex,
        "retention": retention,
        "partitions": partitions,
        "checkpoint": checkpoint,
    }
    run_id = str(flow_run.id or uuid.uuid4())
    async with RunScope():
        await prepare_database(url)
        before = await measure_database(url, limits)
        actions = decide(before, policy, {step for step, on in flags.items() if on})
        progress = await acreate_progress_artifact(
            0.0, key=PROGRESS_KEY, description=f"maintain-database: {len(actions)} action(s)"
        )
        outcomes = []
        for done, action in enumerate(actions, start=1):
            outcomes.append(await run_action(url, action, limits, policy, dry_run))
            await aupdate_progress_artifact(progress, 100.0 * done / len(actions))
        if not actions:
            await aupdate_progress_artifact(progress, 100.0)
        after = await measure_database(url, limits) if not dry_run else before
        rows = report_rows(before, after, outcomes)
        if not dry_run:
            await record_maintenance(url, run_id, rows)
    await acreate_markdown_artifact(
        markdown_report(before.dialect, rows, outcomes, dry_run),
        key=REPORT_KEY,
        description=f"maintain-database run {run_id}: before/after per object",
    )
    failed = [
        f"{o.action.step} {o.action.target}: {o.detail}" for o in outcomes if o.status == "failed"
    ]
    if failed:
        raise MaintenanceStepsFailed(
            f"{len(failed)} maintenance step(s) failed: " + "; ".join(failed)
        )
    return rows


if __name__ == "__main__":
    asyncio.run(maintain_database())
