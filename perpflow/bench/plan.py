"""What a benchmark run measures and how each benchmark is started (shared by the CLI and the
run-benchmarks flow), and how a run ends (judged against history and stored)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from perpflow.bench import cycle, ingest, queries, results
from perpflow.bench.figures import Figure, Machine, machine, server_version
from perpflow.store import create_engine, init_schema

BENCHMARKS = ("ingest", "validation", "cycle", "queries", "memory")
Progress = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class WorkerTarget:
    """The collection cycle a fresh worker process runs for the memory benchmark:
    ``target`` (``module:function``) and environment variables it needs besides the venues'."""

    target: str
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchOptions:
    """Sizes of a run. ``workload_url``: a scratch database the benchmarks may fill and empty
    (its market tables are emptied; never the market database); ``ingest_rows`` per way,
    ``batch_rows`` per transaction; ``query_sizes``: rows per queried table, ascending;
    ``query_repeats`` timed runs per read; ``cycle_venues``: venue counts of the collection
    cycles, ``symbols`` perpetuals per venue, ``latency_ms`` per emulated request."""

    workload_url: str
    ingest_rows: int = 100_000
    batch_rows: int = ingest.BATCH_ROWS
    query_sizes: tuple[int, ...] = (1_000_000, 10_000_000)
    query_repeats: int = 50
    symbols: int = 300
    cycle_venues: tuple[int, ...] = (3, 30)
    latency_ms: float = 100.0

    def __post_init__(self) -> None:
        for name in ("ingest_rows", "batch_rows", "query_repeats", "symbols"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be positive")
        if list(self.query_sizes) != sorted(set(self.query_sizes)) or any(
            n <= 0 for n in self.query_sizes
        ):
            raise ValueError(
                f"query_sizes={self.query_sizes!r}: expected distinct positive sizes, ascending"
            )
        if any(n <= 0 for n in self.cycle_venues) or self.latency_ms < 0:
            raise ValueError(
                f"cycle_venues={self.cycle_venues!r}, latency_ms={self.latency_ms!r}: "
                "expected positive venue counts and a latency >= 0"
            )


def check_benchmarks(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``names`` in run order; raises ``ValueError`` naming an unknown benchmark."""
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown or not names:
        raise ValueError(f"benchmarks={list(names)!r}: expected some of {', '.join(BENCHMARKS)}")
    return tuple(name for name in BENCHMARKS if name in names)


def _database_identity(url: str) -> tuple:
    """Where ``url``'s data lives, whatever the spelling: the resolved file of a SQLite URL; the
    loopback-normalized host, port (default 5432) and database of a PostgreSQL URL (user,
    password and query do not change which database it is)."""
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        return ("sqlite", str(Path(parsed.database or "").expanduser().resolve()))
    host = parsed.host or "localhost"
    host = "127.0.0.1" if host in ("localhost", "::1", "127.0.0.1") else host.lower()
    return ("postgresql", host, parsed.port or 5432, parsed.database)


def check_separate(workload_url: str, market_url: str) -> None:
    """Raises ``ValueError`` when the workload database is the market database (its market
    tables would be emptied), however the two URLs spell it (``_database_identity``)."""
    if _database_identity(workload_url) == _database_identity(market_url):
        raise ValueError(
            "bench_database_url: must not be the market database (the benchmarks "
            "empty its market tables); give a scratch database"
        )


async def describe_machine(workload_url: str) -> Machine:
    """This machine and the workload database's server version."""
    engine = create_engine(workload_url)
    try:
        return machine(await server_version(engine))
    finally:
        await engine.dispose()


async def _silent(_: str) -> None:
    return None


async def measure(
    benchmark: str,
    options: BenchOptions,
    *,
    cycle_runner: cycle.CycleRunner | None = None,
    worker: WorkerTarget | None = None,
    progress: Progress = _silent,
) -> list[Figure]:
    """Run one benchmark of ``BENCHMARKS`` on ``options.workload_url`` and return its figures.

    ``cycle`` needs ``cycle_runner`` (one collection run, given the ``PERPFLOW_*`` environment
    of emulated venues; see ``perpflow.bench.cycle``) and ``memory`` a ``worker``: both are
    orchestration, which the caller provides. ``ingest`` on SQLite measures SQLite only; on
    PostgreSQL both. ``progress`` is awaited with a line after each part. Raises ``ValueError``
    for an unknown benchmark or a missing runner.
    """
    check_benchmarks([benchmark])
    if benchmark == "validation":
        return ingest.validation_cost(options.batch_rows)
    if benchmark == "cycle":
        if cycle_runner is None:
            raise ValueError(
                "benchmark 'cycle' runs a collection flow: use the run-benchmarks flow"
            )
        figures = []
        for venues in options.cycle_venues:
            figures += await cycle.collection_cycle(
                cycle_runner, options.workload_url, venues, options.symbols, options.latency_ms
            )
            await progress(f"cycle {venues}x{options.symbols} done")
        return figures
    if benchmark == "memory":
        if worker is None:
            raise ValueError(
                "benchmark 'memory' runs a collection flow: use the run-benchmarks flow"
            )
        with cycle.emulated_venues(3, options.symbols, options.latency_ms) as emulator:
            env = {**worker.env, **cycle.cycle_environment(emulator.venues, options.workload_url)}
            return await asyncio.to_thread(cycle.worker_rss, worker.target, env)
    engine = create_engine(options.workload_url)
    try:
        await init_schema(engine)
        if benchmark == "ingest":
            figures = await ingest.sqlite_ingest(options.ingest_rows, options.batch_rows)
            await progress("ingest sqlite done")
            if engine.dialect.name == "postgresql":
                figures += await ingest.postgresql_ingest(
                    engine, options.ingest_rows, options.batch_rows
                )
                await progress("ingest postgresql done")
            return figures
        workload = queries.QueryWorkload(engine, options.symbols)
        await workload.start()
        figures = []
        for size in options.query_sizes:
            await workload.grow_to(size)
            await progress(f"queries: {queries.size_label(size)} rows generated")
            figures += await queries.query_latency(
                workload, options.query_repeats, max(3, options.query_repeats // 5)
            )
            await progress(f"queries at {queries.size_label(size)} done")
        return figures
    finally:
        await engine.dispose()


def new_run_id() -> str:
    """A run id for a run outside Prefect."""
    return str(uuid.uuid4())


async def conclude(
    results_url: str, run_id: str, figures: list[Figure], where: Machine, margin: float
) -> list[results.Verdict]:
    """Judge ``figures`` against the earlier runs stored at ``results_url`` (schema created if
    missing) and store them under ``run_id``; returns the verdicts."""
    engine = create_engine(results_url)
    try:
        await init_schema(engine)
        verdicts = results.judge(figures, await results.history(engine, where, run_id), margin)
        await results.record(engine, run_id, verdicts, where, datetime.now(UTC))
        return verdicts
    finally:
        await engine.dispose()
