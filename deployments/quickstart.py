"""Run the main job once, offline: emulator on 127.0.0.1 -> both collection flows -> SQLite.

``python -m deployments.quickstart [--symbols N]`` starts the local exchange emulator with a
generated market for binanceusdm, bybit and okx, points each venue's ``api_url`` at it, runs
``collect-tickers`` and ``sweep-funding-rates`` once into ``PERPFLOW_DATABASE_URL`` (the embedded
SQLite file by default), and prints what was stored per venue and where.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from flows.collect_tickers import collect_tickers
from flows.common import VenueStepsFailed
from flows.sweep_funding_rates import sweep_funding_rates
from perpflow.emulator import EmulatorServer, GeneratedVenue
from perpflow.settings import ExchangeConfig, load_settings
from perpflow.store import create_engine, stored_summary

VENUES = ("binanceusdm", "bybit", "okx")


async def _run_flows() -> list[str]:
    failures = []
    for job in (collect_tickers, sweep_funding_rates):
        try:
            await job()
        except VenueStepsFailed as exc:
            failures.append(f"{job.name}: {exc}")
    return failures


async def _summary(url: str) -> list[dict]:
    engine = create_engine(url)
    try:
        return await stored_summary(engine)
    finally:
        await engine.dispose()


def _print_summary(url: str, rows: list[dict]) -> None:
    columns = ("exchange", "instruments", "tickers", "funding_rates", "funding_history", "quarantine")
    print(f"\nStored in {url}:")
    print("  ".join(f"{c:>15}" for c in columns))
    for row in rows:
        print("  ".join(f"{row[c]:>15}" for c in columns))
    print(
        "\nEvery run above is in Prefect's local history. To browse runs, task runs, logs and the\n"
        "ledger artifacts: .venv/bin/prefect server start, then open http://127.0.0.1:4200"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (1 when a venue step failed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=50, help="perpetuals per emulated venue")
    args = parser.parse_args(argv)
    settings = load_settings()  # validates PERPFLOW_* before anything starts
    url = settings.database_url.get_secret_value()
    venues = [GeneratedVenue(name, name, symbols=args.symbols) for name in VENUES]
    with EmulatorServer(venues).running_in_thread() as emulator:
        configs = [
            ExchangeConfig(id=name, api_url=emulator.venue_base_url(name)).model_dump(mode="json")
            for name in VENUES
        ]
        os.environ["PERPFLOW_EXCHANGES"] = json.dumps(configs)
        print(f"Exchange emulator listening on {emulator.base_url} ({', '.join(VENUES)})")
        failures = asyncio.run(_run_flows())
    _print_summary(url, asyncio.run(_summary(url)))
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
