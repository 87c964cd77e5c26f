"""Tasks of the realized-funding bookkeeping: proven coverage and funding-interval history (the
market database, given by URL; the run's engine is shared)."""

from __future__ import annotations

from typing import Any

from prefect import task
from pydantic import SecretStr

from perpflow import store
from perpflow.backfill import Watermark
from perpflow.history import Coverage
from perpflow.intervals import IntervalSpan, Observation
from tasks.store import STORE_POLICY


@task(name="history-watermarks", task_run_name="history-watermarks-{exchange}", **STORE_POLICY)
async def history_watermarks(url: SecretStr, exchange: str) -> dict[str, Watermark]:
    """``{symbol: Watermark}`` (proven coverage, newest stored settlement, interval) of
    ``exchange``'s instruments, for ``perpflow.backfill.plan_history``."""
    async with store.run_engine(url.get_secret_value()) as engine:
        return await store.history_watermarks(engine, exchange)


@task(name="funding-timelines", task_run_name="funding-timelines-{exchange}", **STORE_POLICY)
async def funding_timelines(url: SecretStr, exchange: str) -> dict[str, list[IntervalSpan]]:
    """``{symbol: funding-interval timeline}`` of ``exchange`` (absent: never known)."""
    async with store.run_engine(url.get_secret_value()) as engine:
        found = await store.read_intervals(engine, exchange)
    return {symbol: timeline for (_, symbol), timeline in found.items()}


@task(
    name="record-funding-intervals",
    task_run_name="record-funding-intervals-{exchange}",
    **STORE_POLICY,
)
async def record_funding_intervals(
    url: SecretStr, exchange: str, observations: dict[str, list[Observation]]
) -> list[dict[str, Any]]:
    """Apply stated or inferred intervals to ``exchange``'s timelines; returns the changes."""
    async with store.run_engine(url.get_secret_value()) as engine:
        return await store.record_intervals(engine, exchange, observations)


@task(
    name="record-funding-coverage",
    task_run_name="record-funding-coverage-{exchange}",
    **STORE_POLICY,
)
async def record_funding_coverage(
    url: SecretStr, exchange: str, coverage: dict[str, list[Coverage]], run_id: str
) -> dict[str, tuple[int, int] | None]:
    """Extend ``exchange``'s stored coverage by what this run proved (after its rows are
    stored); returns ``{symbol: (covered_from, covered_to) or None}`` in UTC ms."""
    async with store.run_engine(url.get_secret_value()) as engine:
        return await store.record_coverage(engine, exchange, coverage, run_id)


@task(
    name="record-unreachable-history",
    task_run_name="record-unreachable-history-{exchange}",
    **STORE_POLICY,
)
async def record_unreachable_history(
    url: SecretStr,
    exchange: str,
    coverage: dict[str, list[Coverage]],
    run_id: str,
) -> list[dict[str, Any]]:
    """Record the history windows this run proved unreachable (older than the venue keeps, no
    history call) as ``unfillable`` funding gaps with their reason; returns the new ones."""
    async with store.run_engine(url.get_secret_value()) as engine:
        return await store.record_unreachable(engine, exchange, coverage, run_id)
