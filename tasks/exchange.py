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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

import httpx
from prefect import task
from prefect.cache_policies import NO_CACHE, CacheKeyFnPolicy
from prefect.client.orchestration import get_client
from prefect.context import TaskRunContext
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError, rate_limit
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.tasks import exponential_backoff

from perpflow import exchanges, history, normalize, snapshots
from perpflow.backfill import HistoryRequest
from perpflow.scope import borrow
from perpflow.intervals import IntervalSpan, Observation
from perpflow.settings import ExchangeConfig

HISTORY_CONCURRENCY = 8
MAX_RETRY_AFTER_S = 120.0


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


# What taking a slot raises when the Prefect API fails (after the client's own retries): an HTTP
# error status (e.g. 503), a transport error, or the concurrency service's wrapper of either.
SLOT_ERRORS = (ConcurrencySlotAcquisitionError, httpx.HTTPError, PrefectHTTPStatusError)


def _slot_taker(venue: ExchangeConfig, name: str) -> Callable[[], Awaitable[None]]:
    """The request hook taking one slot of rate limit ``name``; a Prefect API failure is raised
    as ``exchanges.TransientExchangeError`` (call ``rate_limit``), so the step is retried with
    the venue's retry policy like a transient venue error."""

    async def take_slot() -> None:
        try:
            await rate_limit(name)
        except SLOT_ERRORS as exc:
            raise exchanges.TransientExchangeError(venue.label, "rate_limit", exc) from exc

    return take_slot


@asynccontextmanager
async def venue_rate_limit(venue: ExchangeConfig) -> AsyncIterator[None]:
    """Within the block, each request to ``venue`` first takes one slot of its global rate limit
    (``prefect.concurrency.asyncio.rate_limit``), when that limit exists on the Prefect server.
    A Prefect API error while looking the limit up or taking a slot raises
    ``exchanges.TransientExchangeError`` (retried like a transient venue error)."""
    name = rate_limit_name(venue.label)
    try:
        async with get_client() as client:
            await client.read_global_concurrency_limit_by_name(name)
        hook = _slot_taker(venue, name)
    except ObjectNotFound:
        hook = None
    except SLOT_ERRORS as exc:
        raise exchanges.TransientExchangeError(venue.label, "rate_limit", exc) from exc
    with exchanges.before_each_request(hook):
        yield


WindowDone = Callable[[HistoryRequest, history.FundingHistory], Awaitable[None]]
_window_done: ContextVar[WindowDone | None] = ContextVar("perpflow_window_done", default=None)


@contextmanager
def reporting_windows(callback: WindowDone) -> Iterator[None]:
    """Within the block, ``fetch_funding_history`` awaits ``callback(request, result)`` as each
    symbol window finishes (fetched or failed), when it runs in this process (on Dask it does
    not report). A callback error is ignored: progress never fails a fetch."""
    token = _window_done.set(callback)
    try:
        yield
    finally:
        _window_done.reset(token)


async def _window_finished(request: HistoryRequest, result: history.FundingHistory) -> None:
    callback = _window_done.get()
    if callback is not None:
        try:
            await callback(request, result)
        except Exception:  # noqa: BLE001, S110 - progress is informative only
            pass


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
    """``{symbol: ccxt market}`` of ``venue``'s selected perpetuals (ccxt
    ``load_markets``: e.g. binance ``/fapi/v1/exchangeInfo``, bybit
    ``/v5/market/instruments-info``, okx ``/api/v5/public/instruments``); cached for 1 h."""
    async with honouring_retry_after(), venue_rate_limit(venue):
        return await exchanges.load_perpetuals(venue)


def _attempt() -> int:
    """This task run's attempt (1 for the first run; 1 outside a task run)."""
    ctx = TaskRunContext.get()
    return max(1, ctx.task_run.run_count) if ctx is not None else 1


def _last_attempt() -> bool:
    """True in a task run's last allowed attempt (or outside a task run)."""
    ctx = TaskRunContext.get()
    return ctx is None or _attempt() > (ctx.task.retries or 0)


@asynccontextmanager
async def honouring_retry_after() -> AsyncIterator[None]:
    """Within the block, a transient venue error that carries the venue's ``Retry-After`` waits
    that long (at most ``MAX_RETRY_AFTER_S``) before it reaches Prefect, whose retry then adds its
    own backoff: the venue's wish is kept within the task's retry count."""
    try:
        yield
    except exchanges.ExchangeError as exc:
        if exc.transient and exc.retry_after and not _last_attempt():
            await asyncio.sleep(min(exc.retry_after, MAX_RETRY_AFTER_S))
        raise


def budgeted(task_, venue: ExchangeConfig, calls: int):
    """``task_`` with a timeout that grows with the ``calls`` it may make to ``venue`` (see
    ``VenueProfile.budget_seconds``), never below the task's own timeout."""
    budget = exchanges.offline_profile(venue).budget_seconds(calls)
    return task_.with_options(timeout_seconds=max(task_.timeout_seconds or 0, budget))


async def _forget(_: dict) -> None:
    return None


async def _snapshot_batch(
    venue: ExchangeConfig,
    dataset: str,
    markets: dict[str, dict[str, Any]],
    per_symbol_max: int,
    run_id: str,
    normalize_rows: Callable[[list[str], snapshots.Fetched], normalize.Batch],
) -> tuple[normalize.Batch, float]:
    """Fetch a snapshot dataset and normalize it; symbols whose own call failed are the batch's
    ``failed``. A transient failure of some symbols raises (so Prefect retries) until the last
    attempt, and a retry asks only for the symbols not fetched yet (kept for the run)."""
    started = time.perf_counter()
    async with borrow(f"fetched:{run_id}:{venue.label}:{dataset}", dict, _forget) as done:
        async with honouring_retry_after(), venue_rate_limit(venue):
            fetched = await snapshots.fetch_snapshots(
                venue, dataset, markets, per_symbol_max, done, retry_enrichment=not _last_attempt()
            )
            transient = [e for e in fetched.failed.values() if e.transient]
            if transient and not _last_attempt():
                raise snapshots.SymbolsFailed(venue.label, dataset, fetched.failed)
    latency = (time.perf_counter() - started) * 1000
    batch = normalize_rows([s for s in markets if s not in fetched.failed], fetched)
    batch.failed = {s: str(e) for s, e in fetched.failed.items()}
    batch.attempts = _attempt()
    batch.notes = fetched.notes
    return batch, latency


@task(
    name="fetch-tickers",
    task_run_name="fetch-tickers-{venue.label}",
    **LIVE_FETCH,
)
async def fetch_tickers(
    venue: ExchangeConfig, markets: dict[str, dict[str, Any]], per_symbol_max: int, run_id: str
) -> tuple[normalize.Batch, float]:
    """Fetch and normalize ``venue``'s tickers for ``markets`` (ccxt ``fetch_tickers``, or
    ``fetch_ticker`` per symbol; see ``perpflow.snapshots``); returns (batch, latency ms)."""

    def rows(symbols: list[str], fetched: snapshots.Fetched) -> normalize.Batch:
        return normalize.ticker_rows(
            venue.label, fetched.items, symbols, fetched.received_ms, run_id, fetched.unparsed,
            markets=markets,
        )

    return await _snapshot_batch(venue, "tickers", markets, per_symbol_max, run_id, rows)


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
    """Fetch and normalize current/predicted funding rates (ccxt ``fetch_funding_rates``, or
    ``fetch_funding_rate`` per symbol); returns (batch, latency ms)."""

    def rows(symbols: list[str], fetched: snapshots.Fetched) -> normalize.Batch:
        return normalize.funding_rate_rows(
            venue.label, fetched.items, symbols, fetched.received_ms, run_id, max_abs_rate,
            fetched.unparsed,
        )

    return await _snapshot_batch(venue, "funding_rates", markets, per_symbol_max, run_id, rows)


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
    timelines: dict[str, list[IntervalSpan]] | None = None,
) -> tuple[normalize.Batch, float, dict[str, list[history.Coverage]], dict[str, list[Observation]]]:
    """Fetch and normalize realized funding history for every planned request (ccxt
    ``fetch_funding_rate_history``, paged until timestamps prove coverage; at most
    ``HISTORY_CONCURRENCY`` symbols at a time).

    One symbol's failure never fails the others: its rows so far are kept, its coverage stops
    where the failure began and it is listed in ``batch.failed`` (``'ErrorClass: message'``).
    Only when every request failed does the task raise (``TransientExchangeError`` when any
    failure was transient, so the task is retried; else ``PermanentExchangeError``).

    Returns ``(batch, latency ms, {symbol: [Coverage]}, {symbol: [inferred Observation]})``;
    ``timelines`` are the funding-interval timelines known before (``{symbol: [IntervalSpan]}``).
    """
    started = time.perf_counter()
    gate = asyncio.Semaphore(HISTORY_CONCURRENCY)

    async def one(request: HistoryRequest) -> history.FundingHistory:
        async with gate:
            try:
                result = await history.fetch_funding_history(
                    venue,
                    markets,
                    request.symbol,
                    request.since_ms,
                    request.until_ms,
                    request.anchor_ms,
                )
            except Exception as exc:  # noqa: BLE001 - one symbol's trouble stays that symbol's
                result = history.failed_history(
                    request.symbol, request.since_ms, request.until_ms, exc
                )
        await _window_finished(request, result)
        return result

    async with honouring_retry_after(), venue_rate_limit(venue):
        results = await asyncio.gather(*(one(request) for request in plan))
    if results and all(result.error for result in results):
        kind = (
            exchanges.TransientExchangeError
            if any(result.transient for result in results)
            else exchanges.PermanentExchangeError
        )
        sample = results[0]
        raise kind(
            venue.label,
            "fetch_funding_rate_history",
            RuntimeError(f"every symbol failed, e.g. {sample.symbol}: {sample.error}"),
        )
    batch, inferred, coverage = history.history_batch(
        venue.label, plan, results, timelines or {}, exchanges.now_ms(), run_id, max_abs_rate
    )
    batch.attempts = _attempt()
    return batch, (time.perf_counter() - started) * 1000, coverage, inferred
