"""Tasks of the maintain-database flow: measure, one task per action, record the figures.

Nothing here retries: a maintenance statement that meets a lock or runs too long is bounded by
``lock_timeout``/``statement_timeout`` and reported, and the next scheduled run tries again.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from perpflow import maintenance
from perpflow.maintenance import Action, Limits, Outcome, Policy, Snapshot
from perpflow.store import run_engine

MAINTENANCE_POLICY: dict[str, Any] = {"cache_policy": NO_CACHE, "retries": 0}


@task(name="measure-database", **MAINTENANCE_POLICY)
async def measure_database(url: SecretStr, limits: Limits) -> Snapshot:
    """Sizes, dead tuples, bloat, (auto)vacuum/analyze times, invalid indexes, partitions."""
    async with run_engine(url.get_secret_value()) as engine:
        return await maintenance.measure(engine, limits)


@task(name="maintain", task_run_name="{action.step}-{action.target}", **MAINTENANCE_POLICY)
async def run_action(
    url: SecretStr, action: Action, limits: Limits, policy: Policy, dry_run: bool
) -> Outcome:
    """Run one maintenance action; a timeout or database error is the outcome, not a raise."""
    async with run_engine(url.get_secret_value()) as engine:
        return await maintenance.act(engine, action, limits, policy, dry_run)


@task(name="record-maintenance", **MAINTENANCE_POLICY)
async def record_maintenance(url: SecretStr, run_id: str, rows: list[dict[str, Any]]) -> None:
    """Store the report's per-object figures in ``maintenance_results``."""
    async with run_engine(url.get_secret_value()) as engine:
        await maintenance.record(engine, run_id, rows)
