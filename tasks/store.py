"""Tasks that touch the market database (given by URL; the run's engine is shared)."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr
from sqlalchemy import Table

from perpflow import store
from perpflow.backfill import Gap
from perpflow.normalize import Batch

STORE_POLICY: dict[str, Any] = {
    "cache_policy": NO_CACHE,
    "retries": 2,
    "retry_delay_seconds": [1, 5],
    "timeout_seconds": 300,
}


@task(name="prepare-database", **STORE_POLICY)
async def prepare_database(url: SecretStr) -> None:
    """Bring the database to the newest schema revision (Alembic; cheap when already there)."""
    async with store.run_engine(url.get_secret_value()) as engine:
        await store.init_schema(engine)


@task(name="upsert-instruments", task_run_name="upsert-instruments-{exchange}", **STORE_POLICY)
async def upsert_instruments(url: SecretStr, exchange: str, rows: list[dict[str, Any]]) -> int:
    """Insert or refresh ``exchange``'s instrument rows; returns how many were given."""
    async with store.run_engine(url.get_secret_value()) as engine:
        await store.upsert_instruments(engine, rows)
    return len(rows)


@task(name="store-batch", task_run_name="store-{batch.dataset}-{batch.exchange}", **STORE_POLICY)
async def store_batch(
    url: SecretStr, table: Table, batch: Batch, entry: store.LedgerEntry
) -> store.StoreResult:
    """Store a normalized batch with its quarantine and ledger rows (one transaction)."""
    async with store.run_engine(url.get_secret_value()) as engine:
        return await store.store_batch(engine, table, batch, entry)


@task(name="record-failure", task_run_name="record-failure-{entry.exchange}", **STORE_POLICY)
async def record_failure(url: SecretStr, entry: store.LedgerEntry, requested: int) -> None:
    """Write the ledger row of a venue step that failed after its retries."""
    async with store.run_engine(url.get_secret_value()) as engine:
        await store.record_failure(engine, entry, requested)


@task(name="open-funding-gaps", task_run_name="open-funding-gaps-{exchange}", **STORE_POLICY)
async def open_funding_gaps(url: SecretStr, exchange: str) -> list[Gap]:
    """``exchange``'s funding-history gaps still ``open`` (found by check-data-quality)."""
    async with store.run_engine(url.get_secret_value()) as engine:
        return [store.as_gap(row) for row in await store.read_gaps(engine, "open", exchange)]


@task(name="resolve-funding-gaps", task_run_name="resolve-funding-gaps-{exchange}", **STORE_POLICY)
async def resolve_funding_gaps(
    url: SecretStr, exchange: str, gaps: list[Gap], run_id: str
) -> list[dict[str, Any]]:
    """Mark ``gaps`` (refetched by this sweep) ``filled`` or ``unfillable``; returns outcomes."""
    async with store.run_engine(url.get_secret_value()) as engine:
        return await store.resolve_gaps(engine, gaps, run_id)


@task(name="record-funding-gaps", **STORE_POLICY)
async def record_funding_gaps(url: SecretStr, gaps: list[Gap], run_id: str) -> list[dict[str, Any]]:
    """Record newly found gaps as ``open``; returns every given gap with its current status."""
    async with store.run_engine(url.get_secret_value()) as engine:
        return await store.record_gaps(engine, gaps, run_id)


@task(name="unfillable-funding-gaps", **STORE_POLICY)
async def unfillable_funding_gaps(url: SecretStr) -> list[dict[str, Any]]:
    """Every gap the venues no longer serve (``funding_gaps`` rows), oldest first."""
    async with store.run_engine(url.get_secret_value()) as engine:
        return await store.read_gaps(engine, "unfillable")


@task(name="write-quality-results", **STORE_POLICY)
async def write_quality_results(url: SecretStr, run_id: str, rows: list[dict[str, Any]]) -> None:
    """Store one data-quality run's results (one row per expectation)."""
    async with store.run_engine(url.get_secret_value()) as engine:
        await store.write_quality_results(engine, run_id, rows)


@task(name="write-health-snapshot", **STORE_POLICY)
async def write_health_snapshot(url: SecretStr, run_id: str, rows: list[dict[str, Any]]) -> None:
    """Store one health run's checks (one ``health_snapshots`` row each, plus ``overall``)."""
    async with store.run_engine(url.get_secret_value()) as engine:
        await store.write_health_snapshot(engine, run_id, rows)


@task(name="previous-health-status", **STORE_POLICY)
async def previous_health_status(url: SecretStr, run_id: str) -> str | None:
    """The overall status of the newest earlier health snapshot (None when there is none)."""
    async with store.run_engine(url.get_secret_value()) as engine:
        return await store.previous_health_status(engine, run_id)
