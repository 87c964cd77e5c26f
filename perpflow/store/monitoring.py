"""Monitoring records kept for trends: data-quality results and health snapshots.

One ``quality_results`` row per (data-quality run, expectation key) and one ``health_snapshots``
row per (health run, check name); the overall health status is the check named ``overall``.
Writes are idempotent by key: a retried write replaces the run's rows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from perpflow.store.schema import health_snapshots, quality_results

OVERALL = "overall"


async def _replace_run(
    engine: AsyncEngine, table: Table, run_id: str, rows: list[dict[str, Any]]
) -> None:
    async with engine.begin() as conn:
        await conn.execute(delete(table).where(table.c.run_id == run_id))
        if rows:
            await conn.execute(table.insert(), [{**row, "run_id": run_id} for row in rows])


async def write_quality_results(
    engine: AsyncEngine, run_id: str, rows: list[dict[str, Any]]
) -> None:
    """Store one data-quality run's results (``rows``: columns of ``quality_results`` without
    ``run_id``)."""
    await _replace_run(engine, quality_results, run_id, rows)


async def write_health_snapshot(
    engine: AsyncEngine, run_id: str, rows: list[dict[str, Any]]
) -> None:
    """Store one health run's checks (``rows``: columns of ``health_snapshots`` without
    ``run_id``; one of them named ``overall``)."""
    await _replace_run(engine, health_snapshots, run_id, rows)


async def previous_health_status(engine: AsyncEngine, run_id: str) -> str | None:
    """The overall status (``OK``/``WARN``/``CRIT``) of the newest health snapshot taken by
    another run than ``run_id``, or None when there is none."""
    query = (
        select(health_snapshots.c.status)
        .where(health_snapshots.c.name == OVERALL, health_snapshots.c.run_id != run_id)
        .order_by(health_snapshots.c.taken_at.desc())
        .limit(1)
    )
    async with engine.connect() as conn:
        return (await conn.execute(query)).scalar_one_or_none()
