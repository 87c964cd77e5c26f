"""sweep-funding-rates: current/predicted funding, realized history from each instrument's proven
coverage, and the funding-interval history (changes emitted as events)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import datetime
from functools import partial
from typing import Any

from prefect import flow, tags
from prefect.artifacts import acreate_table_artifact
from prefect.events import emit_event
from prefect.logging import get_run_logger
from prefect.utilities.annotations import quote

from flows.common import RunContext, describe, publish_ledger, resolve_run, run_step, venue_markets
from flows.progress import VenueProgress, step_outcome
from perpflow.backfill import gap_requests, plan_history
from perpflow.exchanges import now_ms
from perpflow.intervals import VENUE, Observation
from perpflow.scope import RunScope
from perpflow.settings import ExchangeConfig
from perpflow.store import funding_history, funding_rates
from tasks.exchange import fetch_funding_history, fetch_funding_rates, reporting_windows
from tasks.history import (
    funding_timelines,
    history_watermarks,
    record_funding_coverage,
    record_funding_intervals,
    record_unreachable_history,
)
from tasks.store import open_funding_gaps, prepare_database, resolve_funding_gaps

DAY_MS = 86_400_000
GAPS_KEY = "sweep-funding-rates-gaps"
BACKFILL_KEY = "sweep-funding-rates-backfill"
INTERVALS_KEY = "sweep-funding-rates-intervals"
INTERVAL_CHANGED = "perpflow.funding.interval_changed"


def stated_intervals(rows: list[dict[str, Any]]) -> dict[str, list[Observation]]:
    """The funding intervals the venue states (``interval_hours`` of ``funding_rates`` rows,
    from ccxt's ``interval`` field) as observations at each row's time; unknown ones are left
    out, never defaulted."""
    stated: dict[str, list[Observation]] = {}
    for row in rows:
        if row["interval_hours"]:
            at = int(row["ts"].timestamp() * 1000)
            observed = Observation(at, row["interval_hours"], VENUE)
            stated.setdefault(row["symbol"], []).append(observed)
    return stated


async def _venue(
    ctx: RunContext,
    venue: ExchangeConfig,
    progress: VenueProgress,
    resolved: list[dict[str, Any]],
    changes: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    settings = ctx.settings
    loaded: dict[str, Any] = {}

    async def rates():
        markets = await venue_markets(ctx, venue)
        batch, latency = await ctx.exchange_task(fetch_funding_rates, venue, len(markets))(
            venue, quote(markets), settings.per_symbol_max, settings.max_abs_funding_rate, ctx.run_id
        )
        loaded["stated"] = stated_intervals(batch.rows)
        return batch, latency

    async def history():
        markets = await venue_markets(ctx, venue)
        watermarks = await history_watermarks(ctx.database_url, venue.label)
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
        await progress.plan(venue.label, len(plan), show=loaded["backfill"])
        timelines = await funding_timelines(ctx.database_url, venue.label)
        fetch_task = ctx.exchange_task(fetch_funding_history, venue, 3 * len(plan))
        with reporting_windows(partial(progress.window, venue.label)):
            batch, latency, loaded["coverage"], loaded["inferred"] = await fetch_task(
                venue,
                quote(markets),
                quote(plan),
                settings.max_abs_funding_rate,
                ctx.run_id,
                quote(timelines),
            )
        return batch, latency

    url = ctx.database_url
    with tags(f"exchange:{venue.label}"):
        current = await run_step(ctx, venue, funding_rates, rates)
        if current is not None and current["status"] in ("ok", "partial") and loaded.get("stated"):
            stated = record_funding_intervals(url, venue.label, quote(loaded["stated"]))
            changes += await _bookkeeping(venue, stated)
        realized = await run_step(ctx, venue, funding_history, history)
        if realized is not None and realized["status"] in ("ok", "partial"):
            changes += await _bookkeeping(venue, _after_history(ctx, venue, loaded, resolved))
    await progress.finish(venue.label, step_outcome(realized))
    return [outcome for outcome in (current, realized) if outcome is not None]


async def _bookkeeping(venue: ExchangeConfig, work: Awaitable[list[dict[str, Any]]]):
    """Await ``work`` (the sweep's bookkeeping after a stored step) and return its interval
    changes; a failure there is logged and stays this venue's (coverage stays where it was, so
    the next sweep asks again), never the run's."""
    try:
        return await work
    except Exception as exc:  # noqa: BLE001 - bookkeeping trouble stays this venue's
        get_run_logger().error("%s: funding bookkeeping failed (%s); the next sweep asks again",
                               venue.label, describe(exc))
        return []


async def _after_history(
    ctx: RunContext, venue: ExchangeConfig, loaded: dict[str, Any], resolved: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """After the history rows are stored (coverage never claims a settlement that is not): the
    inferred interval changes, the proven coverage, the windows proved unreachable and the open
    gaps refetched (appended to ``resolved``); returns the interval changes."""
    url = ctx.database_url
    changes = await record_funding_intervals(url, venue.label, quote(loaded["inferred"]))
    await record_funding_coverage(url, venue.label, quote(loaded["coverage"]), ctx.run_id)
    resolved += await record_unreachable_history(
        url, venue.label, quote(loaded["coverage"]), ctx.run_id
    )
    if loaded.get("gaps"):
        resolved += await resolve_funding_gaps(url, venue.label, loaded["gaps"], ctx.run_id)
    return changes


async def _report_interval_changes(changes: list[dict[str, Any]]) -> None:
    """One ``perpflow.funding.interval_changed`` event per change (resource: the instrument) and
    the ``sweep-funding-rates-intervals`` table artifact listing them."""
    if not changes:
        return
    for change in changes:
        emit_event(
            event=INTERVAL_CHANGED,
            resource={
                "prefect.resource.id": (
                    f"perpflow.instrument.{change['exchange']}.{change['symbol']}"
                ),
                "perpflow.exchange": change["exchange"],
                "perpflow.symbol": change["symbol"],
            },
            payload=change,
        )
        get_run_logger().warning(
            "%s %s: funding interval %gh -> %gh from %s (%s)",
            change["exchange"], change["symbol"], change["old_hours"], change["new_hours"],
            change["changed_at"], change["source"],
        )
    await acreate_table_artifact(
        table=changes,
        key=INTERVALS_KEY,
        description="Funding-interval changes detected by this sweep: stated by the venue or "
        "inferred from settlement times (from the first settlement at the new interval).",
    )


async def _report_gaps(resolved: list[dict[str, Any]]) -> None:
    if not resolved:
        return
    columns = ("exchange", "symbol", "gap_from", "gap_to", "missing", "stored", "status", "detail")
    await acreate_table_artifact(
        table=[
            {c: v.isoformat() if isinstance(v, datetime) else v for c, v in gap.items()}
            for gap in ({column: gap.get(column) for column in columns} for gap in resolved)
        ],
        key=GAPS_KEY,
        description="Funding-history gaps of this sweep: those found by check-data-quality and "
        "refetched (filled, or unfillable when the venue no longer serves the missing "
        "settlements), and windows the venue's answers proved unreachable (unfillable, with the "
        "reason first in detail: beyond_venue_horizon, venue_unsupported).",
    )
    for gap in resolved:
        if gap["status"] == "unfillable":
            get_run_logger().warning(
                "%s %s: settlements %s .. %s unfillable (venue served %s of %s) %s",
                gap["exchange"], gap["symbol"], gap["gap_from"], gap["gap_to"],
                gap["stored"], gap["missing"], gap.get("detail") or "",
            )


@flow(name="sweep-funding-rates", log_prints=True)
async def sweep_funding_rates(
    exchanges: list[str] | None = None, database: str | None = None
) -> list[dict[str, Any]]:
    """For every enabled venue: current funding (``fundingRate`` as a fraction per interval, next
    funding time, the venue's predicted ``nextFundingRate``, mark/index price, interval; ccxt
    ``fetch_funding_rates``), then realized settlements (ccxt ``fetch_funding_rate_history``)
    from each symbol's proven coverage (``funding_coverage``: paging until timestamps prove it;
    coverage that stopped short is fetched again; one symbol's failure is listed in the ledger's
    batch, not the venue's), backfilling ``PERPFLOW_FUNDING_HISTORY_LOOKBACK_DAYS`` on first
    sight. Funding intervals are kept as history (``funding_intervals``: stated by the venue or
    inferred from settlement times, unknown left unknown); each change emits the event
    ``perpflow.funding.interval_changed`` and is listed in the ``sweep-funding-rates-intervals``
    table artifact. It also refetches the windows of open funding-history gaps (recorded by
    check-data-quality), marking each filled or unfillable (``sweep-funding-rates-gaps`` table
    artifact; a warning per unfillable gap). Backfills show the ``sweep-funding-rates-backfill``
    progress artifact: per venue, symbol windows finished and failed, and how the venue's step
    ended (``failed: ...`` for a failed venue, never "done"). Parameters as for collect-tickers.
    Returns the ledger dicts; publishes the ``sweep-funding-rates-ledger`` table artifact; raises
    ``VenueStepsFailed`` when a step failed.
    """
    ctx = await resolve_run(exchanges, database)
    progress = VenueProgress(
        BACKFILL_KEY, [venue.label for venue in ctx.venues], "funding-history backfill"
    )
    resolved: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    async with RunScope():
        await prepare_database(ctx.database_url)
        per_venue = await asyncio.gather(
            *(_venue(ctx, venue, progress, resolved, changes) for venue in ctx.venues)
        )
    await _report_gaps(resolved)
    await _report_interval_changes(changes)
    outcomes = [outcome for pair in per_venue for outcome in pair]
    await publish_ledger("sweep-funding-rates-ledger", ctx, outcomes)
    return outcomes


if __name__ == "__main__":
    asyncio.run(sweep_funding_rates())
