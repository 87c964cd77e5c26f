"""Tasks that call exchanges: retried on transient ccxt errors only, one task per (venue, step).

Retries use exponential backoff with jitter and run only for ``TransientExchangeError`` (ccxt's
NetworkError family, translated once in ``perpflow.exchanges``); a bad symbol, an auth failure or
a bad request fails at once. Market loading is cached for an hour per venue configuration; live
fetches are never cached.

Every HTTP request to a venue first takes a slot of the venue's global rate limit
(``rate_limit_name``, created by ``python -m deployments.setup`` with the venue's request budget as
its slot decay per second), so any number of workers together keep to the budget; where that
limit does not exist the requests are paced by ccxt's own per-client throttler only.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE, CacheKeyFnPolicy
from prefect.client.orchestration import get_client
from prefect.concurrency.asyncio import rate_limit
from prefect.exceptions import ObjectNotFound
from prefect.tasks import exponential_backoff

from perpflow import exchanges, history, normalize
from perpflow.backfill import HistoryRequest
from perpflow.settings import ExchangeConfig

HISTORY_CONCURRENCY = 8


def is_transient(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry only transient exchange errors."""
    return getattr(state.data, "transient", False) is True


def retrying(task_, retries: int, backoff_seconds: float):
    """``task_`` with ``retries`` retries, exponential backoff from ``backoff_seconds``, jitter."""
    return task_.with_options(
        retries=retries, retry_delay_seconds=exponential_backoff(backoff_factor=backoff_seconds)
    )


RETRY_POLICY: dict[str, Any] = {
    "retries": 4,
    "retry_delay_seconds": exponential_backoff(backoff_factor=1),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": is_transient,
}


def rate_limit_name(label: str) -> str:
    """Name of the global concurrency limit that paces the requests to venue ``label``."""
    return f"exchange-requests:{label}"


@asynccontextmanager
async def venue_rate_limit(venue: ExchangeConfig) -> AsyncIterator[None]:
    """Within the block, each request to ``venue`` first takes one slot of its global rate limit
    (``prefect.concurrency.asyncio.rate_limit``), when that limit exists on the Prefect server."""
    name = rate_limit_name(venue.label)
    async with get_client() as client:
        try:
            await client.read_global_concurrency_limit_by_name(name)
            hook = partial(rate_limit, name)
        except ObjectNotFound:
            hook = None
    with exchanges.before_each_request(hook):
        yield


LIVE_FETCH: dict[str, Any] = {"cache_policy": NO_CACHE, "timeout_seconds": 120, **RETRY_POLICY}


def _venue_cache_key(context, parameters: dict[str, Any]) -> str:
    venue: ExchangeConfig = parameters["venue"]
    # id + options + URL override: the same venue config shares one cached market list.
    return "markets-" + hashlib.sha256(venue.model_dump_json().encode()).hexdigest()[:32]


@task(
    name="load-markets",
    task_run_name="load-markets-{venue.label}",
    cache_policy=CacheKeyFnPolicy(cache_key_fn=_venue_cache_key),
    cache_expiration=timedelta(hours=1),
    persist_result=True,
    timeout_seconds=120,
    **RETRY_POLICY,
)
async def load_markets(venue: ExchangeConfig) -> dict[str, dict[str, Any]]:
    """``{symbol: ccxt market}`` of ``venue``'s selected linear perpetuals (ccxt
    ``load_markets``: e.g. binance ``/fapi/v1/exchangeInfo``, bybit
    ``/v5/market/instruments-info``, okx ``/api/v5/public/instruments``); cached for 1 h."""
    async with venue_rate_limit(venue):
        return await exchanges.load_perpetuals(venue)


@task(
    name="fetch-tickers",
    task_run_name="fetch-tickers-{venue.label}",
    **LIVE_FETCH,
)
async def fetch_tickers(
    venue: ExchangeConfig, markets: dict[str, dict[str, Any]], per_symbol_max: int, run_id: str
) -> tuple[normalize.Batch, float]:
    """Fetch and normalize ``venue``'s tickers for ``markets``; returns (batch, latency ms)."""
    started = time.perf_counter()
    async with venue_rate_limit(venue):
        tickers, received, unparsed = await exchanges.fetch_tickers(venue, markets, per_symbol_max)
    latency = (time.perf_counter() - started) * 1000
    batch = normalize.ticker_rows(
        venue.label, tickers, list(markets), received, run_id, unparsed, markets=markets
    )
    return batch, latency


@task(
    name="fetch-funding-rates",
    task_run_name="fetch-funding-rates-{venue.label}",
    **LIVE_FETCH,
)
async def fetch_funding_rates(
    venue: ExchangeConfig,
    markets: dict[str, dict[str, Any]],
    per_symbol_max: int,
    max_abs_rate: float,
    run_id: str,
) -> tuple[normalize.Batch, float]:
    """Fetch and normalize current/predicted funding rates; returns (batch, latency ms)."""
    started = time.perf_counter()
    async with venue_rate_limit(venue):
        rates, received, unparsed = await exchanges.fetch_funding_rates(
            venue, markets, per_symbol_max
        )
    latency = (time.perf_counter() - started) * 1000
    batch = normalize.funding_rate_rows(
        venue.label, rates, list(markets), received, run_id, max_abs_rate, unparsed
    )
    return batch, latency


@task(
    name="fetch-funding-history",
    task_run_name="fetch-funding-history-{venue.label}",
    **{**LIVE_FETCH, "timeout_seconds": 900},
)
async def fetch_funding_history(
    venue: ExchangeConfig,
    markets: dict[str, dict[str, Any]],
    plan: list[HistoryRequest],
    max_abs_rate: float,
    run_id: str,
) -> tuple[normalize.Batch, float]:
    """Fetch and normalize realized funding history for every planned symbol (ccxt
    ``fetch_funding_rate_history``, paged by the venue's cap); returns (batch, latency ms)."""
    started = time.perf_counter()
    gate = asyncio.Semaphore(HISTORY_CONCURRENCY)

    async def one(request: HistoryRequest) -> list[dict[str, Any]]:
        async with gate:
            return await history.fetch_funding_history(
                venue,
                markets,
                request.symbol,
                request.since_ms,
                request.until_ms,
                request.interval_ms,
            )

    async with venue_rate_limit(venue):
        pages = await asyncio.gather(*(one(request) for request in plan))
    received = exchanges.now_ms()
    batch = normalize.Batch(venue.label, "funding_history")
    for request, history in zip(plan, pages, strict=True):
        normalize.funding_history_rows(
            venue.label,
            request.symbol,
            history,
            request.interval_ms / normalize.HOUR_MS,
            received,
            run_id,
            max_abs_rate,
            batch,
        )
    return batch, (time.perf_counter() - started) * 1000
