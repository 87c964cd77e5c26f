"""sweep-funding-rates: current/predicted funding and realized history from each watermark."""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow, tags
from prefect.artifacts import acreate_table_artifact
from prefect.logging import get_run_logger
from prefect.utilities.annotations import quote

from flows.common import RunContext, publish_ledger, resolve_run, run_step, venue_markets
from flows.progress import Progress
from perpflow.backfill import gap_requests, plan_history
from perpflow.exchanges import now_ms
from perpflow.scope import RunScope
from perpflow.settings import ExchangeConfig
from perpflow.store import funding_history, funding_rates
from tasks.exchange import fetch_funding_history, fetch_funding_rates
from tasks.store import (
    funding_watermarks,
    open_funding_gaps,
    prepare_database,
    resolve_funding_gaps,
    set_funding_intervals,
)

DAY_MS = 86_400_000
GAPS_KEY = "sweep-funding-rates-gaps"


async def _venue(
    ctx: RunContext, venue: ExchangeConfig, progress: Progress, resolved: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    settings = ctx.settings
    loaded: dict[str, Any] = {}

    async def rates():
        markets = await venue_markets(ctx, venue)
        batch, latency = await ctx.exchange_task(fetch_funding_rates, venue, len(markets))(
            venue, quote(markets), settings.per_symbol_max, settings.max_abs_funding_rate, ctx.run_id
        )
        hours = {row["symbol"]: row["interval_hours"] for row in batch.rows if row["interval_hours"]}
        await set_funding_intervals(ctx.database_url, venue.label, quote(hours))
        return batch, latency

    async def history():
        markets = await venue_markets(ctx, venue)
        watermarks = await funding_watermarks(ctx.database_url, venue.label)
        lookback = int(settings.funding_history_lookback_days * DAY_MS)
        plan = plan_history(list(markets), watermarks, now_ms(), lookback)
        # Only gaps of selected markets are fetched, so only those are resolved after the fetch.
        gaps = await open_funding_gaps(ctx.database_url, venue.label)
        loaded["gaps"] = [gap for gap in gaps if gap.symbol in markets]
        plan += gap_requests(loaded["gaps"])
        # Long work: a first-sight lookback or a stale watermark (over a day), or gap windows.
        loaded["backfill"] = bool(loaded["gaps"]) or any(
            r.until_ms - r.since_ms > DAY_MS for r in plan
        )
        if loaded["backfill"]:
            await progress.show(f"{venue.label}: {len(plan)} symbol window(s)")
        return await ctx.exchange_task(fetch_funding_history, venue, 3 * len(plan))(
            venue, quote(markets), quote(plan), settings.max_abs_funding_rate, ctx.run_id
        )

    with tags(f"exchange:{venue.label}"):
        current = await run_step(ctx, venue, funding_rates, rates)
        realized = await run_step(ctx, venue, funding_history, history)
        if realized and realized["status"] == "ok" and loaded.get("gaps"):
            resolved += await resolve_funding_gaps(
                ctx.database_url, venue.label, loaded["gaps"], ctx.run_id
            )
    await progress.advance(1, f"{venue.label} done")
    return [outcome for outcome in (current, realized) if outcome is not None]


async def _report_gaps(resolved: list[dict[str, Any]]) -> None:
    if not resolved:
        return
    await acreate_table_artifact(
        table=resolved,
        key=GAPS_KEY,
        description="Funding-history gaps (found by check-data-quality) refetched by this sweep: "
        "filled, or unfillable when the venue no longer serves the missing settlements.",
    )
    for gap in resolved:
        if gap["status"] == "unfillable":
            get_run_logger().warning(
                "%s %s: settlements %s .. %s unfillable (venue served %s of %s)",
                gap["exchange"], gap["symbol"], gap["gap_from"], gap["gap_to"],
                gap["stored"], gap["missing"],
            )


@flow(name="sweep-funding-rates", log_prints=True)
async def sweep_funding_rates(
    exchanges: list[str] | None = None, database: str | None = None
) -> list[dict[str, Any]]:
    """For every enabled venue: current funding (``fundingRate`` as a fraction per interval, next
    funding time, the venue's predicted ``nextFundingRate``, mark/index price, interval; ccxt
    ``fetch_funding_rates``), then realized settlements (ccxt ``fetch_funding_rate_history``)
    from each symbol's stored watermark, backfilling ``PERPFLOW_FUNDING_HISTORY_LOOKBACK_DAYS``
    on first sight, and refetches the windows of open funding-history gaps (recorded by
    check-data-quality), marking each filled or unfillable (``sweep-funding-rates-gaps`` table
    artifact; a warning per unfillable gap). Backfills show the ``sweep-funding-rates-backfill``
    progress artifact. Parameters as for collect-tickers. Returns the ledger dicts; publishes the
    ``sweep-funding-rates-ledger`` table artifact; raises ``VenueStepsFailed`` when a step failed.
    """
    ctx = await resolve_run(exchanges, database)
    progress = Progress(
        "sweep-funding-rates-backfill", len(ctx.venues), "funding-history backfill, venues done"
    )
    resolved: list[dict[str, Any]] = []
    async with RunScope():
        await prepare_database(ctx.database_url)
        per_venue = await asyncio.gather(
            *(_venue(ctx, venue, progress, resolved) for venue in ctx.venues)
        )
    await _report_gaps(resolved)
    outcomes = [outcome for pair in per_venue for outcome in pair]
    await publish_ledger("sweep-funding-rates-ledger", ctx, outcomes)
    return outcomes


if __name__ == "__main__":
    asyncio.run(sweep_funding_rates())
