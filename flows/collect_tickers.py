"""collect-tickers: every enabled venue's perpetual tickers, concurrently, into the store."""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow, tags
from prefect.utilities.annotations import quote

from flows.common import RunContext, publish_ledger, resolve_run, run_step, venue_markets
from perpflow.scope import RunScope
from perpflow.settings import ExchangeConfig
from perpflow.store import tickers
from tasks.exchange import fetch_tickers
from tasks.store import prepare_database


async def _venue(ctx: RunContext, venue: ExchangeConfig) -> dict[str, Any] | None:
    async def fetch():
        markets = await venue_markets(ctx, venue)
        fetch_task = ctx.exchange_task(fetch_tickers, venue, len(markets))
        return await fetch_task(venue, quote(markets), ctx.settings.per_symbol_max, ctx.run_id)

    with tags(f"exchange:{venue.label}"):
        return await run_step(ctx, venue, tickers, fetch)


@flow(name="collect-tickers", log_prints=True)
async def collect_tickers(
    exchanges: list[str] | None = None, database: str | None = None
) -> list[dict[str, Any]]:
    """Fetch tickers (bid, ask, last, mark and index price in quote currency; volumes) for the
    selected perpetuals of every enabled venue (ccxt ``fetch_tickers``, or ``fetch_ticker`` per
    symbol where the venue has no bulk call or refuses it) and store them.

    ``exchanges``: names of ``perpflow-exchange`` blocks (default: ``PERPFLOW_EXCHANGES``);
    ``database``: name of a ``perpflow-market-database`` block (default: ``PERPFLOW_DATABASE_URL``).
    Returns one ledger dict per venue; publishes them as the ``collect-tickers-ledger`` table
    artifact. Raises ``VenueStepsFailed`` after storing the others when any venue failed.
    """
    ctx = await resolve_run(exchanges, database)
    async with RunScope():
        await prepare_database(ctx.database_url)
        outcomes = await asyncio.gather(*(_venue(ctx, venue) for venue in ctx.venues))
    outcomes = [outcome for outcome in outcomes if outcome is not None]
    await publish_ledger("collect-tickers-ledger", ctx, outcomes)
    return outcomes


if __name__ == "__main__":
    asyncio.run(collect_tickers())
