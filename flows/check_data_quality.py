"""check-data-quality: great-expectations suites over a window of the market data, with reports."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import acreate_link_artifact, acreate_table_artifact

from flows.common import resolve_run
from flows.progress import Progress
from perpflow.quality import QualityWindow, Thresholds, suites
from perpflow.scope import RunScope
from tasks.quality import load_quality_window, validate_quality_window
from tasks.store import (
    prepare_database,
    record_funding_gaps,
    unfillable_funding_gaps,
    write_quality_results,
)

RESULTS_KEY = "data-quality-results"
DOCS_KEY = "data-quality-docs"
GAPS_KEY = "data-quality-funding-gaps"
PROGRESS_KEY = "data-quality-progress"


class DataQualityFailed(RuntimeError):
    """Raised at the end of a check-data-quality run when an expectation failed (after every
    result was stored and published); the message names the failed expectation keys."""


def _table_row(row: dict[str, Any], pages: dict[str, str]) -> dict[str, Any]:
    return {
        "expectation": row["expectation"],
        "success": row["success"],
        "unexpected_count": row["unexpected_count"],
        "unexpected_percent": row["unexpected_percent"],
        "element_count": row["element_count"],
        "examples": json.dumps(row["examples"])[:400],
        "docs": pages.get(row["dataset"], ""),
    }


def _gap_row(gap: dict[str, Any]) -> dict[str, Any]:
    return {
        "exchange": gap["exchange"],
        "symbol": gap["symbol"],
        "from": gap["gap_from"].isoformat(),
        "to": gap["gap_to"].isoformat(),
        "missing": gap["missing"],
        "interval_hours": gap["interval_hours"],
        "status": gap["status"],
        "detail": gap["detail"] or "",
    }


@flow(name="check-data-quality", log_prints=True)
async def check_data_quality(
    start: datetime | None = None, end: datetime | None = None, database: str | None = None
) -> list[dict[str, Any]]:
    """Validate the market data collected in ``[start, end)`` (timezone-aware UTC; default: the
    last ``PERPFLOW_QUALITY_WINDOW_MINUTES`` up to now) with the great-expectations suites of
    ``perpflow.quality`` (keys not null and unique, prices > 0, bid <= ask, mark within a band of
    index, |funding rate| bound, timestamps neither in the future nor stale, coverage per venue,
    funding-history continuity).

    ``database``: name of a ``perpflow-market-database`` block (default:
    ``PERPFLOW_DATABASE_URL``). Builds the Data Docs under ``PERPFLOW_QUALITY_DIR``; publishes the
    ``data-quality-results`` table (one row per expectation), the ``data-quality-docs`` link and
    the ``data-quality-funding-gaps`` table (gaps found, and every unfillable one), and for a window
    longer than the default the ``data-quality-progress`` progress artifact; stores the
    results in ``quality_results`` and records new gaps ``open`` in ``funding_gaps`` for the
    funding sweep to refetch. Returns the result rows; raises ``DataQualityFailed`` naming the
    failed expectations (the run ends Failed), ``ValueError`` for a bad window.
    """
    ctx = await resolve_run(None, database)
    async with RunScope():  # one engine for the run's tasks
        settings = ctx.settings
        end = end or datetime.now(UTC)
        window = QualityWindow(start or end - timedelta(minutes=settings.quality_window_minutes), end)
        thresholds = Thresholds(
            mark_index_band=settings.quality_mark_index_band,
            max_abs_funding_rate=settings.quality_max_abs_funding_rate,
            clock_skew_seconds=settings.quality_clock_skew_seconds,
            max_age_seconds=settings.quality_max_age_seconds,
            min_coverage=settings.quality_min_coverage,
        )
        span = f"{window.start.isoformat()} .. {window.end.isoformat()}"
        progress = Progress(PROGRESS_KEY, len(suites(thresholds)) + 1, f"data quality {span}")

        async def suite_done(name: str) -> None:
            await progress.advance(1, f"suite {name} validated")

        await prepare_database(ctx.database_url)
        if window.end - window.start > timedelta(minutes=settings.quality_window_minutes):
            await progress.show("loading the window")  # longer than the hourly default: long work
        data = await load_quality_window(ctx.database_url, window)
        await progress.advance(1, f"loaded {sum(len(f) for f in data.frames.values())} rows")
        gaps = await record_funding_gaps(ctx.database_url, data.gaps, ctx.run_id)
        unfillable = await unfillable_funding_gaps(ctx.database_url)
        run = await validate_quality_window(
            data,
            thresholds,
            Path(settings.quality_dir),
            ctx.run_id,
            settings.quality_examples,
            suite_done,
        )
        checked_at = datetime.now(UTC)
        await write_quality_results(
            ctx.database_url,
            ctx.run_id,
            [
                {
                    **row,
                    "window_start": window.start,
                    "window_end": window.end,
                    "checked_at": checked_at,
                }
                for row in run.rows
            ],
        )
        failed = [row["expectation"] for row in run.rows if not row["success"]]
        passed = f"{len(run.rows) - len(failed)}/{len(run.rows)} expectations passed"
        await acreate_table_artifact(
            table=[_table_row(row, run.docs_pages) for row in run.rows],
            key=RESULTS_KEY,
            description=f"Data quality {span}: {passed}"
            + (f"; FAILED: {', '.join(failed)}" if failed else ""),
        )
        await acreate_link_artifact(
            link=run.docs_index,
            link_text="great-expectations Data Docs",
            key=DOCS_KEY,
            description=f"Data Docs (validation results of every run; this run: {ctx.run_id})",
        )
        seen = {(g["exchange"], g["symbol"], g["gap_from"]) for g in gaps}
        reported = gaps + [
            g for g in unfillable if (g["exchange"], g["symbol"], g["gap_from"]) not in seen
        ]
        await acreate_table_artifact(
            table=[_gap_row(gap) for gap in reported],
            key=GAPS_KEY,
            description=f"Funding-history gaps found in {span} ({len(gaps)}) and every gap the venues "
            f"no longer serve ({len(unfillable)} unfillable); open gaps are refetched by the next "
            "funding sweep.",
        )
        if failed:
            raise DataQualityFailed(f"{len(failed)} expectation(s) failed: {', '.join(failed)}")
        return run.rows


if __name__ == "__main__":
    asyncio.run(check_data_quality())
