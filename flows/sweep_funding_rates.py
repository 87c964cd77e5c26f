"""sweep-funding-rates: current/predicted funding and realized history from each watermark."""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow, tags

from flows.common import RunContext, publish_ledger, resolve_run, run_step, venue_markets
from perpflow.backfill import plan_history
from perpflow.exchanges import now_ms
from perpflow.scope import RunScope
from perpflow.settings import ExchangeConfig
from perpflow.store import funding_history, funding_rates
from tasks.exchange import fetch_funding_history, fetch_funding_rates
from tasks.store import funding_watermarks, prepare_database, set_funding_intervals

DAY_MS = 86_400_000


async def _venue(ctx: RunContext, venue: ExchangeConfig) -> list[dict[str, Any]]:
    settings = ctx.settings
    loaded: dict[str, dict[str, Any]] = {}

    async def rates():
        loaded["markets"] = await venue_markets(ctx, venue)
        batch, latency = await ctx.exchange_task(fetch_funding_rates)(
            venue, loaded["markets"], settings.per_symbol_max, settings.max_abs_funding_rate, ctx.run_id
        )
        hours = {row["symbol"]: row["interval_hours"] for row in batch.rows if row["interval_hours"]}
        await set_funding_intervals(ctx.database_url, venue.label, hours)
        return batch, latency

    async def history():
        if "markets" not in loaded:
            raise RuntimeError("no market list: load-markets failed (see funding_rates)")
        markets = loaded["markets"]
        watermarks = await funding_watermarks(ctx.database_url, venue.label)
        lookback = int(settings.funding_history_lookback_days * DAY_MS)
        plan = plan_history(list(markets), watermarks, now_ms(), lookback)
        return await ctx.exchange_task(fetch_funding_history)(
            venue, markets, plan, settings.max_abs_funding_rate, ctx.run_id
        )

    with tags(f"exchange:{venue.label}"):
        current = await run_step(ctx, venue, funding_rates, rates)
        realized = await run_step(ctx, venue, funding_history, history)
    return [current, realized]


@flow(name="sweep-funding-rates", log_prints=True)
async def sweep_funding_rates(
    exchanges: list[str] | None = None, database: str | None = None
) -> list[dict[str, Any]]:
    """For every enabled venue: current funding (``fundingRate`` as a fraction per interval, next
    funding time, the venue's predicted ``nextFundingRate``, mark/index price, interval; ccxt
    ``fetch_funding_rates``), then realized settlements (ccxt ``fetch_funding_rate_history``)
    from each symbol's stored watermark, backfilling ``PERPFLOW_FUNDING_HISTORY_LOOKBACK_DAYS``
    on first sight. Parameters as for collect-tickers. Returns the ledger dicts; publishes the
    ``sweep-funding-rates-ledger`` table artifact; raises ``VenueStepsFailed`` when a step failed.
    """
    ctx = await resolve_run(exchanges, database)
    async with RunScope():
        await prepare_database(ctx.database_url)
        per_venue = await asyncio.gather(*(_venue(ctx, venue) for venue in ctx.venues))
    outcomes = [outcome for pair in per_venue for outcome in pair]
    await publish_ledger("sweep-funding-rates-ledger", ctx, outcomes)
    return outcomes


if __name__ == "__main__":
    asyncio.run(sweep_funding_rates())
