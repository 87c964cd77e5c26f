"""run-benchmarks: ingest, validation, collection cycle, query latency and worker memory figures,
judged against earlier runs, stored in ``benchmark_results`` and published as artifacts."""

from __future__ import annotations

import asyncio
import os
from typing import Any
from unittest import mock

from prefect import flow
from prefect.events import emit_event
from prefect.logging import get_run_logger
from prefect.settings import get_current_settings
from pydantic import SecretStr

from flows.collect_tickers import collect_tickers
from flows.common import database_url, resolve_run
from perpflow import bench
from perpflow.bench.plan import check_benchmarks, check_separate
from tasks.bench import (
    describe_machine,
    publish_results,
    record_results,
    run_benchmark,
    start_progress,
)

COLLECTION = "flows.collect_tickers:collect_tickers"


async def _collect(env: dict[str, str]) -> list[dict[str, Any]]:
    """One collect-tickers run (a subflow) with the benchmark's venues and database."""
    with mock.patch.dict(os.environ, env):
        return await collect_tickers()


def _worker() -> bench.WorkerTarget:
    """collect-tickers in a fresh process, reporting to this run's Prefect API."""
    api = get_current_settings().api.url
    return bench.WorkerTarget(COLLECTION, {"PREFECT_API_URL": api} if api else {})


def _steps(names: tuple[str, ...], options: bench.BenchOptions) -> int:
    parts = {
        "ingest": 2,
        "cycle": len(options.cycle_venues),
        "queries": 2 * len(options.query_sizes),
    }
    return len(names) + sum(parts.get(name, 0) for name in names)


@flow(name="run-benchmarks", log_prints=True)
async def run_benchmarks(
    benchmarks: list[str] | None = None,
    ingest_rows: int = 100_000,
    batch_rows: int = 500,
    query_sizes: list[int] | None = None,
    query_repeats: int = 50,
    symbols: int = 300,
    cycle_venues: list[int] | None = None,
    latency_ms: float = 100.0,
    regression_margin: float | None = None,
    database: str | None = None,
    bench_database: str | None = None,
) -> list[dict[str, Any]]:
    """Measure, judge against earlier runs, store and publish the product's benchmark figures.

    ``benchmarks``: some of ingest, validation, cycle, queries, memory (default: all);
    ``ingest_rows`` per way in ``batch_rows``-row transactions and in bulk; ``query_sizes``: rows
    per queried table (default 1M and 10M), ``query_repeats`` timed runs per read;
    ``cycle_venues``: venue counts of the collection cycles (default 3 and 30), each with
    ``symbols`` perpetuals and ``latency_ms`` per emulated request; ``regression_margin``: a
    fraction (default ``PERPFLOW_BENCH_REGRESSION_MARGIN``); ``database``: a
    ``perpflow-market-database`` block for the results (default ``PERPFLOW_DATABASE_URL``);
    ``bench_database``: such a block for the scratch workload database, whose market tables are
    emptied (default ``PERPFLOW_BENCH_DATABASE_URL``).

    Returns one dict per figure (the rows of the ``run-benchmarks-results`` table artifact);
    publishes ``run-benchmarks-summary`` (markdown) and ``run-benchmarks-progress``; emits a
    ``perpflow.benchmark.flagged`` event when a figure regressed or missed its budget. Raises
    ``ValueError`` for a bad parameter (naming it) or when the two databases are the same.
    """
    ctx = await resolve_run(None, database)
    workload = await database_url(ctx.settings.bench_database_url, bench_database)
    check_separate(workload.get_secret_value(), ctx.database_url.get_secret_value())
    names = check_benchmarks(benchmarks or bench.BENCHMARKS)
    options = bench.BenchOptions(
        workload.get_secret_value(),
        ingest_rows,
        batch_rows,
        tuple(query_sizes or (1_000_000, 10_000_000)),
        query_repeats,
        symbols,
        tuple(cycle_venues or (3, 30)),
        latency_ms,
    )
    margin = (
        ctx.settings.bench_regression_margin if regression_margin is None else regression_margin
    )
    progress = await start_progress(_steps(names, options))
    figures: list[bench.Figure] = []
    for name in names:
        figures += await run_benchmark(
            name, options, progress, cycle_runner=_collect, worker=_worker()
        )
    where = await describe_machine(SecretStr(options.workload_url))
    verdicts = await record_results(ctx.database_url, ctx.run_id, figures, where, margin)
    await publish_results(ctx.run_id, verdicts, where, margin)
    await progress.step(f"{len(verdicts)} figures recorded", last=True)
    flagged = [v.as_row() for v in verdicts if v.status in ("regression", "over budget")]
    if flagged:
        get_run_logger().warning(
            "%d benchmark figure(s) flagged: %s",
            len(flagged),
            ", ".join(f"{row['name']} ({row['status']})" for row in flagged),
        )
        emit_event(
            event="perpflow.benchmark.flagged",
            resource={"prefect.resource.id": f"perpflow.benchmark-run.{ctx.run_id}"},
            payload={"figures": flagged},
        )
    return [v.as_row() for v in verdicts]


if __name__ == "__main__":
    asyncio.run(run_benchmarks())
