"""Benchmark procedures: ingest throughput, validation cost, collection cycle, query latency and
worker memory, as ``Figure`` rows whose ratios compare with a baseline measured in the same run.

``plan.measure(name, options)`` runs one benchmark of ``plan.BENCHMARKS`` against a scratch
(workload) database; ``plan.conclude`` judges a run's figures against earlier runs and stores them
in ``benchmark_results``. Orchestration is injected, never imported: the collection cycle takes a
runner, the memory benchmark names a ``module:function`` for a fresh worker process. ``python -m
perpflow.bench`` runs the standalone benchmarks; the run-benchmarks flow runs them all.
"""

from perpflow.bench.figures import Figure, Machine
from perpflow.bench.plan import (
    BENCHMARKS,
    BenchOptions,
    WorkerTarget,
    conclude,
    describe_machine,
    measure,
)
from perpflow.bench.results import Verdict, summary_markdown

__all__ = [
    "BENCHMARKS",
    "BenchOptions",
    "Figure",
    "Machine",
    "Verdict",
    "WorkerTarget",
    "conclude",
    "describe_machine",
    "measure",
    "summary_markdown",
]
