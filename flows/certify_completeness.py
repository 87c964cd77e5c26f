"""certify-completeness: the daily completeness certificate of the record (perpflow.completeness).

For one UTC day (default: yesterday) and every (venue, dataset) collected, it computes what was
expected, stored, explained (with reasons) and unexplained, stores it in the ``completeness``
table (replacing an earlier certificate of that day) and publishes it as the table artifact
``completeness-certificate``. Unexplained rows are logged as a warning; report-health is CRIT on
them (the certification itself succeeded, so the run completes).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Any

from prefect import flow, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from pydantic import SecretStr

from flows.common import resolve_run
from perpflow import completeness, store
from perpflow.scope import RunScope
from perpflow.store.completeness import write_certificate

ARTIFACT_KEY = "completeness-certificate"
COLUMNS = ("day", "exchange", "dataset", "instruments", "expected", "stored", "explained",
           "unexplained", "reasons", "detail")


@task(name="compute-certificate", cache_policy=NO_CACHE, timeout_seconds=600)
async def compute_certificate(
    url: SecretStr, day: date, intervals: dict[str, int], wanted: dict[str, list[str]],
    run_id: str,
) -> list[dict[str, Any]]:
    """The certificate rows of ``day`` (``perpflow.completeness.compute_certificate``)."""
    async with store.run_engine(url.get_secret_value()) as engine:
        await store.init_schema(engine)
        return await completeness.compute_certificate(
            engine, day, intervals, wanted, run_id=run_id
        )


@task(name="store-certificate", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 5])
async def store_certificate(url: SecretStr, rows: list[dict[str, Any]]) -> int:
    """Upsert the certificate rows into ``completeness``; returns how many."""
    async with store.run_engine(url.get_secret_value()) as engine:
        return await write_certificate(engine, rows)


def previous_day(now: datetime | None = None) -> date:
    """The UTC day before ``now`` (default: the current time)."""
    return ((now or datetime.now(UTC)) - timedelta(days=1)).date()


@flow(name="certify-completeness", log_prints=True)
async def certify_completeness(
    day: date | None = None, exchanges: list[str] | None = None, database: str | None = None
) -> list[dict[str, Any]]:
    """Certify UTC ``day`` (default: yesterday) for the configured venues (``exchanges``: names
    of ``perpflow-exchange`` blocks, else ``PERPFLOW_EXCHANGES``) in the database of the named
    ``perpflow-market-database`` block (else ``PERPFLOW_DATABASE_URL``); the role needs SELECT
    on the market tables and INSERT/UPDATE on ``completeness``.

    Returns the certificate rows (``completeness`` columns).
    """
    ctx = await resolve_run(exchanges, database)
    day = day or previous_day()
    wanted = {
        venue.label: [name for name in completeness.DATASETS if venue.wants(name)]
        for venue in ctx.venues
    }
    intervals = completeness.cadence(ctx.settings)
    async with RunScope():
        rows = await compute_certificate(ctx.database_url, day, intervals, wanted, ctx.run_id)
        await store_certificate(ctx.database_url, rows)
    unexplained = [r for r in rows if r["unexplained"]]
    await acreate_table_artifact(
        table=[{c: _cell(row[c]) for c in COLUMNS} for row in rows],
        key=ARTIFACT_KEY,
        description=f"Completeness certificate of {day} (UTC): per (venue, dataset) observations "
        "expected (snapshots: one per schedule interval per instrument selected; realized "
        "funding: one per settlement by the interval in force), stored, explained with their "
        f"reasons, and unexplained. {len(unexplained)} of {len(rows)} row(s) unexplained.",
    )
    if unexplained:
        get_run_logger().warning(
            "%s: unexplained observations in %s", day,
            ", ".join(f"{r['exchange']} {r['dataset']} ({r['unexplained']})" for r in unexplained),
        )
    return rows


def _cell(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return value


if __name__ == "__main__":
    asyncio.run(certify_completeness())
