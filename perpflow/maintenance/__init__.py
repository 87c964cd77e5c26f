"""Database maintenance mechanism (no Prefect): measure -> decide -> act -> measure again.

PostgreSQL: VACUUM (ANALYZE) tables past the dead-tuple threshold, ANALYZE partitioned parents,
REINDEX INDEX CONCURRENTLY bloated btree indexes, drop the invalid leftovers of a failed concurrent
reindex, retention by detaching (concurrently) and dropping whole expired daily partitions, and
daily partitions created ahead. SQLite: quick_check, retention by batched deletes, VACUUM (or
incremental vacuum) past the free-page threshold, REINDEX, ANALYZE/optimize, WAL checkpoint.
Never VACUUM FULL on PostgreSQL. Each action runs bounded by ``Limits``; one that times out is
reported ``timed_out`` and left for the next run.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from perpflow.maintenance import postgres, sqlite
from perpflow.maintenance.model import (
    STEPS,
    Action,
    Limits,
    ObjectStats,
    Outcome,
    Partition,
    Policy,
    Snapshot,
    decide,
)
from perpflow.maintenance.report import markdown_report, report_rows
from perpflow.store.schema import maintenance_results

__all__ = [
    "STEPS",
    "Action",
    "Busy",
    "IntegrityCheckFailed",
    "Limits",
    "ObjectStats",
    "Outcome",
    "Partition",
    "Policy",
    "Snapshot",
    "act",
    "decide",
    "markdown_report",
    "measure",
    "record",
    "report_rows",
]


class IntegrityCheckFailed(RuntimeError):
    """SQLite's ``PRAGMA quick_check`` found a problem (its messages are the text)."""


class Busy(RuntimeError):
    """A step could not finish because others were using the database (SQLite's WAL checkpoint
    could not reset the log); like a timeout, it is left for the next run."""


def _backend(engine: AsyncEngine):
    return postgres if engine.dialect.name == "postgresql" else sqlite


async def measure(engine: AsyncEngine, limits: Limits) -> Snapshot:
    """Measure every table and index of the database (``postgres.measure``, ``sqlite.measure``)."""
    backend = _backend(engine)
    async with backend.session(engine, limits) as conn:
        return await backend.measure(conn)


async def _run(conn, action: Action, policy: Policy) -> str:
    if action.step == "retention" and action.cutoff is not None:
        deleted = await sqlite.delete_expired(conn, action, policy.sqlite_delete_batch)
        return f"{deleted} rows deleted"
    rows: list[tuple] = []
    for statement in action.statements:
        result = await conn.exec_driver_sql(statement)
        if result.returns_rows:
            rows += [tuple(row) for row in result.all()]
    if action.step == "integrity" and rows != [("ok",)]:
        raise IntegrityCheckFailed("; ".join(str(row[0]) for row in rows[:20]))
    if action.step == "checkpoint":
        busy, wal_pages, moved = rows[-1]
        if busy:
            raise Busy(f"checkpoint busy: {moved} of {wal_pages} WAL pages checkpointed")
        return f"{moved} WAL pages checkpointed, log truncated"
    return ""


async def act(
    engine: AsyncEngine, action: Action, limits: Limits, policy: Policy, dry_run: bool = False
) -> Outcome:
    """Run ``action`` on an autocommit session bounded by ``limits``; never raises for a
    database error: the outcome says ``done``, ``timed_out`` or ``failed`` (with the error's
    first line), or ``planned`` when ``dry_run``."""
    if dry_run:
        return Outcome(action, "planned", 0.0)
    backend = _backend(engine)
    started = time.perf_counter()
    try:
        async with backend.session(engine, limits) as conn:
            detail = await _run(conn, action, policy)
    except (DBAPIError, IntegrityCheckFailed, Busy) as exc:
        status = "timed_out" if isinstance(exc, Busy) or backend.is_timeout(exc) else "failed"
        orig = getattr(exc, "orig", None)  # the DB-API error; its cause is the driver's own
        driver_error = getattr(orig, "__cause__", None) or orig or exc
        message = (str(driver_error).splitlines() or [type(exc).__name__])[0]
        return Outcome(action, status, time.perf_counter() - started, message)
    return Outcome(action, "done", time.perf_counter() - started, detail)


async def record(engine: AsyncEngine, run_id: str, rows: list[dict[str, Any]]) -> None:
    """Store the report's rows (``report_rows``) in ``maintenance_results`` for trends."""
    if not rows:
        return
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            maintenance_results.insert(),
            [{**row, "run_id": run_id, "recorded_at": now} for row in rows],
        )
