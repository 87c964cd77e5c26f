"""``python -m perpflow.bench``: run the benchmarks that need no orchestration (ingest,
validation, queries) on a scratch database, print the figures, judge them against earlier runs
and store them in ``benchmark_results`` of the market database. The collection-cycle and worker
memory benchmarks run a collection flow: ``python -m flows.run_benchmarks`` runs everything.

Exit status 0; 1 when a figure is flagged (a regression or a missed budget); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from perpflow.bench import plan, results
from perpflow.settings import ConfigError, load_settings

STANDALONE = ("ingest", "validation", "queries")


def _ints(value: str) -> tuple[int, ...]:
    return tuple(int(float(part)) for part in value.split(",") if part.strip())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; see ``--help``."""
    parser = argparse.ArgumentParser(
        prog="python -m perpflow.bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--benchmarks",
        default=",".join(STANDALONE),
        help=f"comma-separated, of {', '.join(STANDALONE)}",
    )
    parser.add_argument(
        "--database",
        help="scratch (workload) database URL; its market tables are "
        "emptied (default: PERPFLOW_BENCH_DATABASE_URL)",
    )
    parser.add_argument(
        "--results-database",
        help="where benchmark_results are kept (default: PERPFLOW_DATABASE_URL)",
    )
    parser.add_argument(
        "--no-record", action="store_true", help="print only; store and judge nothing"
    )
    parser.add_argument("--sizes", default="1e6,1e7", help="rows per queried table, e.g. 1e6,1e7")
    parser.add_argument("--ingest-rows", type=int, default=100_000, help="rows per ingest way")
    parser.add_argument("--batch-rows", type=int, default=500, help="rows per ingest transaction")
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per read")
    parser.add_argument("--symbols", type=int, default=300, help="perpetuals per venue")
    parser.add_argument(
        "--margin",
        type=float,
        help="regression margin, a fraction (default: PERPFLOW_BENCH_REGRESSION_MARGIN)",
    )
    parser.add_argument("--output", type=Path, help="also write the figures (JSON) to this file")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    """Measure, print, judge and store; returns the exit status."""
    settings = load_settings()
    workload = args.database or settings.bench_database_url.get_secret_value()
    market = args.results_database or settings.database_url.get_secret_value()
    plan.check_separate(workload, market)
    names = plan.check_benchmarks(args.benchmarks.split(","))
    if set(names) - set(STANDALONE):
        raise ValueError(
            f"benchmarks={list(names)!r}: cycle and memory run a collection flow; "
            "use python -m flows.run_benchmarks"
        )
    options = plan.BenchOptions(
        workload, args.ingest_rows, args.batch_rows, _ints(args.sizes), args.repeats, args.symbols
    )

    async def progress(line: str) -> None:
        print(f"... {line}", file=sys.stderr, flush=True)

    figures = []
    for name in names:
        figures += await plan.measure(name, options, progress=progress)
    where = await plan.describe_machine(workload)
    margin = args.margin if args.margin is not None else settings.bench_regression_margin
    run_id = plan.new_run_id()
    if args.no_record:
        verdicts = results.judge(figures, {}, margin)
    else:
        verdicts = await plan.conclude(market, run_id, figures, where, margin)
    print(results.summary_markdown(run_id, verdicts, where, margin))
    if args.output:
        args.output.write_text(json.dumps([v.as_row() for v in verdicts], indent=1))
    return 1 if any(v.status in ("regression", "over budget") for v in verdicts) else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except (ValueError, ConfigError) as error:
        print(f"perpflow.bench: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
