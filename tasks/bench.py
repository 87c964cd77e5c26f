"""Benchmark tasks: one task per benchmark, the run's conclusion, and its artifacts.

Benchmarks are never retried or cached (a repeated measurement is another measurement); a long
one reports its parts to the run's progress artifact.
"""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from pydantic import SecretStr

from perpflow import bench
from perpflow.bench.cycle import CycleRunner

BENCH_POLICY: dict[str, Any] = {"cache_policy": NO_CACHE, "retries": 0, "timeout_seconds": 3 * 3600}
RESULTS_KEY = "run-benchmarks-results"
SUMMARY_KEY = "run-benchmarks-summary"
PROGRESS_KEY = "run-benchmarks-progress"


class Progress:
    """The run's progress artifact (key ``run-benchmarks-progress``): ``steps`` parts in all,
    advanced by ``step(line)`` (the line becomes its description and a log line)."""

    def __init__(self, steps: int) -> None:
        self.steps = max(steps, 1)
        self.done = 0
        self.artifact_id = None

    async def step(self, line: str, *, last: bool = False) -> None:
        """One more part done (``last``: all done)."""
        self.done = self.steps if last else self.done + 1
        get_run_logger().info("benchmark progress: %s", line)
        await aupdate_progress_artifact(
            self.artifact_id, min(100.0, 100.0 * self.done / self.steps), description=line
        )


@task(name="start-benchmark-progress", **BENCH_POLICY)
async def start_progress(steps: int) -> Progress:
    """Create the run's progress artifact at 0 % for ``steps`` parts."""
    progress = Progress(steps)
    progress.artifact_id = await acreate_progress_artifact(
        0.0, key=PROGRESS_KEY, description="run-benchmarks: starting"
    )
    return progress


@task(name="benchmark", task_run_name="benchmark-{name}", **BENCH_POLICY)
async def run_benchmark(
    name: str,
    options: bench.BenchOptions,
    progress: Progress,
    cycle_runner: CycleRunner | None = None,
    worker: bench.WorkerTarget | None = None,
) -> list[bench.Figure]:
    """Run benchmark ``name`` (see ``perpflow.bench.measure``); one progress step at its end."""
    figures = await bench.measure(
        name, options, cycle_runner=cycle_runner, worker=worker, progress=progress.step
    )
    await progress.step(f"{name}: {len(figures)} figures")
    return figures


@task(name="describe-machine", **BENCH_POLICY)
async def describe_machine(workload_url: SecretStr) -> bench.Machine:
    """Cores, RAM, Python and the workload database's server version."""
    return await bench.describe_machine(workload_url.get_secret_value())


@task(name="record-benchmark-results", **BENCH_POLICY)
async def record_results(
    results_url: SecretStr,
    run_id: str,
    figures: list[bench.Figure],
    where: bench.Machine,
    margin: float,
) -> list[bench.Verdict]:
    """Judge the run's figures against earlier runs and store them in ``benchmark_results``."""
    return await bench.conclude(results_url.get_secret_value(), run_id, figures, where, margin)


@task(name="publish-benchmark-results", **BENCH_POLICY)
async def publish_results(
    run_id: str, verdicts: list[bench.Verdict], where: bench.Machine, margin: float
) -> None:
    """The run's table artifact (``run-benchmarks-results``: one row per figure with its
    baseline, ratio, budget, previous median, change and status) and markdown summary
    (``run-benchmarks-summary``)."""
    await acreate_table_artifact(
        table=[v.as_row() for v in verdicts],
        key=RESULTS_KEY,
        description=f"Benchmark figures of run {run_id}; ratio = value / baseline (same run); "
        "status: ok, new, regression or over budget.",
    )
    await acreate_markdown_artifact(
        bench.summary_markdown(run_id, verdicts, where, margin),
        key=SUMMARY_KEY,
        description=f"Benchmark summary of run {run_id}",
    )
