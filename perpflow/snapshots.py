"""Snapshot datasets (tickers, current funding rates): fetched the way the venue can serve them.

The plan comes from ccxt (``perpflow.capabilities``): one bulk call for every symbol where ccxt
has one, else one call per symbol. What a venue shows only when called is handled here, for every
venue alike:

- a bulk call is made once per contract type (linear, inverse): many venues serve one type per
  call;
- a bulk call the venue refuses (``NotSupported``, ``BadRequest`` such as "cannot contain more
  than 1 symbol") is retried for all symbols and filtered, then replaced by one call per symbol;
  the client remembers what worked for the rest of the run;
- per-symbol calls run concurrently (bounded) under the venue's rate limit, and one symbol's
  failure is that symbol's: it is returned in ``failed``, the others stand;
- a bulk payload ccxt cannot parse is parsed row by row: only the bad rows are quarantined;
- a symbol found in more than one row of a bulk response is quarantined with its rows (ccxt
  would keep the last one): one observation per symbol per response;
- tickers without bid/ask get them from ``fetchBidsAsks`` and funding rates without an interval
  from ``fetchFundingIntervals``, where ccxt has those calls.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async

from perpflow.capabilities import BULK, DatasetPlan
from perpflow.exchanges import (
    PARSE_ERRORS,
    ExchangeError,
    PayloadError,
    PermanentExchangeError,
    TransientExchangeError,
    call,
    capability,
    contract_type,
    exchange_client,
    now_ms,
    venue_profile,
    with_markets,
)
from perpflow.settings import ExchangeConfig

log = logging.getLogger(__name__)

PER_SYMBOL_CONCURRENCY = 10
PARSERS = {"tickers": "parse_ticker", "funding_rates": "parse_funding_rate"}
# How a refused bulk call degrades: the symbols asked for, all symbols (filtered), one by one.
SYMBOLS, ALL, EACH = 0, 1, 2

Unparsed = list[tuple[Any, str | None, str]]


@dataclass
class Fetched:
    """What one snapshot step got from the venue.

    ``items``: ``{symbol: ccxt unified dict}`` (ticker or funding rate; prices in quote
    currency, ``fundingRate`` a fraction per interval, times in UTC ms); ``received_ms``: the
    receipt time (UTC ms); ``unparsed``: raw rows ccxt could not parse, as ``(row, symbol,
    reason)``; ``failed``: ``{symbol: ExchangeError}`` for symbols whose own call failed;
    ``notes``: enrichment calls that failed for good, and what they left unknown (for the
    ledger: the rows are stored, the gap in their values is said).
    """

    items: dict[str, dict[str, Any]]
    received_ms: int
    unparsed: Unparsed = field(default_factory=list)
    failed: dict[str, ExchangeError] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class SymbolsFailed(TransientExchangeError):
    """Some symbols of a step failed transiently (the others were fetched): raised so that the
    step is retried, and the retry asks only for what is missing. ``retry_after`` is the longest
    ``Retry-After`` among the failures."""

    def __init__(self, venue: str, dataset: str, failed: dict[str, ExchangeError]):
        first = next(iter(failed.values()))
        waits = [e.retry_after for e in failed.values() if e.retry_after]
        super().__init__(venue, dataset, first, max(waits) if waits else None)
        self.args = (f"{venue} {dataset}: {len(failed)} symbol(s) failed, e.g. "
                     f"{next(iter(failed))}: {first}",)


def _degraded(client: ccxt_async.Exchange) -> dict[tuple[str, str], int]:
    # Per client, i.e. per venue and run: how far each (method, contract type) had to degrade.
    if not hasattr(client, "_perpflow_degraded"):
        client._perpflow_degraded = {}
    return client._perpflow_degraded


def _refused(exc: ExchangeError) -> bool:
    """A permanent refusal of the call itself, not a payload ccxt could not parse."""
    return isinstance(exc, PermanentExchangeError) and not isinstance(exc, PayloadError)


def rows_in(payload: Any, depth: int = 3) -> list[dict[str, Any]] | None:
    """The longest list of JSON objects in ``payload`` (the body itself, or nested up to ``depth``
    levels in objects): where a venue's bulk response keeps its rows, whatever its envelope."""
    if isinstance(payload, list):
        return payload if payload and all(isinstance(r, dict) for r in payload) else None
    if not isinstance(payload, dict) or depth == 0:
        return None
    found = [rows_in(value, depth - 1) for value in payload.values()]
    found = [rows for rows in found if rows]
    return max(found, key=len) if found else None


def row_symbol(client: ccxt_async.Exchange, raw: Any) -> str | None:
    """The unified symbol of a raw row: the first of its string values that is a market id the
    client knows (ccxt ``markets_by_id``)."""
    if not isinstance(raw, dict):
        return None
    for value in raw.values():
        if isinstance(value, str) and value in (client.markets_by_id or {}):
            return client.safe_symbol(value)
    return None


def repeated_rows(client: ccxt_async.Exchange, wanted: set[str]) -> dict[str, list[dict[str, Any]]]:
    """The raw rows of the client's last JSON body (``rows_in``) for each ``wanted`` symbol that
    appears in more than one of them (``row_symbol``): ``{symbol: [row, ...]}``. ccxt keeps the
    last such row (a repeat with another price would be stored last-wins); one response must give
    one observation per symbol, so these are quarantined instead."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for raw in rows_in(client.last_json_response) or []:
        symbol = row_symbol(client, raw)
        if symbol in wanted:
            rows.setdefault(symbol, []).append(raw)
    return {symbol: found for symbol, found in rows.items() if len(found) > 1}


def _repeats_refused(repeated: dict[str, list[dict[str, Any]]]) -> Unparsed:
    """One quarantine entry per repeated symbol (its rows together), so that the symbol is
    accounted for once."""
    return [
        ({"symbol": symbol, "rows": found}, symbol,
         f"symbol repeated in one response: {len(found)} rows for one observation")
        for symbol, found in repeated.items()
    ]


def _parse_rows(
    client: ccxt_async.Exchange, parser: str, wanted: set[str]
) -> tuple[dict[str, dict[str, Any]], Unparsed]:
    """Parse the rows of the client's last JSON body one by one with ccxt's ``parser``: the rows
    that parse, by symbol, and the wanted ones that do not, with ccxt's reason; a symbol in
    several rows is refused as a whole (``repeated_rows``)."""
    parsed: dict[str, dict[str, Any]] = {}
    repeated = repeated_rows(client, wanted)
    unparsed: Unparsed = _repeats_refused(repeated)
    for raw in rows_in(client.last_json_response) or []:
        symbol = row_symbol(client, raw)
        if symbol in repeated:
            continue
        try:
            item = getattr(client, parser)(raw)
        except PARSE_ERRORS + (ccxt.BaseError,) as exc:
            if symbol in wanted:
                unparsed.append((raw, symbol, f"ccxt {parser}: {type(exc).__name__}: {exc}"))
            continue
        if item.get("symbol") in wanted and item["symbol"] not in repeated:
            parsed[item["symbol"]] = item
    return parsed, unparsed


async def _bulk(
    client: ccxt_async.Exchange, venue: ExchangeConfig, plan: DatasetPlan, symbols: list[str]
) -> tuple[dict[str, dict[str, Any]], Unparsed]:
    """One bulk call for ``symbols`` (or for all, filtered): ``(items, unparsed)``. Raises the
    refusal when the venue refuses both forms (the caller then goes symbol by symbol)."""
    key = (plan.method, contract_type(client.markets[symbols[0]]))
    state = _degraded(client)
    method = getattr(client, plan.method)
    while True:
        args = (symbols,) if state.get(key, SYMBOLS) == SYMBOLS else ()
        try:
            items = await call(venue.label, plan.method, method, *args)
        except PayloadError:
            return _parse_rows(client, PARSERS[plan.dataset], set(symbols))
        except ExchangeError as exc:
            if not _refused(exc) or state.get(key, SYMBOLS) == ALL or plan.fallback is None:
                raise
            state[key] = ALL
            log.info("%s: %s refused for a symbol list (%s); asking for all symbols",
                     venue.label, plan.method, exc)
            continue
        repeated = repeated_rows(client, set(symbols))
        got = {s: items[s] for s in symbols if s in items and s not in repeated}
        if got or repeated or args:
            return got, _repeats_refused(repeated)
        # All symbols, yet none of ours: this form cannot serve them either.
        raise PermanentExchangeError(
            venue.label, plan.method, ccxt.NotSupported("no selected symbol among all symbols")
        )


async def _each(
    client: ccxt_async.Exchange, venue: ExchangeConfig, method: str, symbols: list[str]
) -> tuple[dict[str, dict[str, Any]], Unparsed, dict[str, ExchangeError]]:
    """``method`` once per symbol, at most ``PER_SYMBOL_CONCURRENCY`` at a time: ``(items,
    unparsed, failed)``; a payload ccxt cannot parse is that symbol's quarantine row."""
    gate = asyncio.Semaphore(PER_SYMBOL_CONCURRENCY)
    fn = getattr(client, method)

    async def one(symbol: str) -> tuple[str, Any, ExchangeError | None]:
        async with gate:
            try:
                return symbol, await call(venue.label, method, fn, symbol), None
            except ExchangeError as exc:
                return symbol, None, exc

    items, unparsed, failed = {}, [], {}
    for symbol, item, error in await asyncio.gather(*(one(s) for s in symbols)):
        if isinstance(error, PayloadError):
            unparsed.append(({"symbol": symbol}, symbol, str(error)))
        elif error is not None:
            failed[symbol] = error
        else:
            items[symbol] = item
    return items, unparsed, failed


async def _group(
    client: ccxt_async.Exchange, venue: ExchangeConfig, plan: DatasetPlan, symbols: list[str]
) -> tuple[dict[str, dict[str, Any]], Unparsed, dict[str, ExchangeError]]:
    """Fetch one contract type's ``symbols`` by the plan, degrading to per-symbol calls when the
    venue refuses the bulk forms."""
    key = (plan.method, contract_type(client.markets[symbols[0]]))
    if plan.mode == BULK and _degraded(client).get(key) != EACH:
        try:
            items, unparsed = await _bulk(client, venue, plan, symbols)
            return items, unparsed, {}
        except ExchangeError as exc:
            if not _refused(exc) or plan.fallback is None:
                raise
            _degraded(client)[key] = EACH
            log.warning("%s: %s refused (%s); fetching one symbol at a time with %s",
                        venue.label, plan.method, exc, plan.fallback)
    return await _each(client, venue, plan.fallback or plan.method, symbols)


def _by_contract_type(markets: dict[str, dict[str, Any]], symbols: list[str]) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for symbol in symbols:
        groups.setdefault(contract_type(markets[symbol]), []).append(symbol)
    return list(groups.values())


@dataclass(frozen=True)
class Enrichment:
    """How a step treats a failed enrichment call: ``retry`` raises a transient failure (the task
    is retried, and the items are fetched again with it); otherwise the failure is noted in
    ``fetched.notes`` and the values stay unknown."""

    venue: ExchangeConfig
    fetched: Fetched
    retry: bool

    async def call(self, name: str, fn: Any, symbols: list[str], fields: str) -> dict | None:
        """The call's result (``{}`` when empty), or None when it failed for good."""
        try:
            return await call(self.venue.label, name, fn, symbols) or {}
        except ExchangeError as exc:
            if exc.transient and self.retry:
                raise
            note = f"{name} failed ({exc.error_class}): {fields} unknown for {len(symbols)} symbol(s)"
            log.warning("%s: %s: %s", self.venue.label, note, exc)
            self.fetched.notes.append(note)
            return None


async def _fill_bid_ask(client, enrich: Enrichment, groups: list[list[str]], items: dict) -> None:
    if not client.has.get("fetchBidsAsks"):
        return
    for symbols in groups:
        lacking = [s for s in symbols if s in items and items[s].get("bid") is None]
        if not lacking:
            continue
        fn = client.fetch_bids_asks
        books = await enrich.call("fetch_bids_asks", fn, lacking, "bid/ask") or {}
        for symbol in lacking:
            book = books.get(symbol) or {}
            for name in ("bid", "ask", "bidVolume", "askVolume"):
                if items[symbol].get(name) is None:
                    items[symbol][name] = book.get(name)


async def _fill_intervals(client, enrich: Enrichment, groups: list[list[str]], items: dict) -> None:
    if not client.has.get("fetchFundingIntervals"):
        return
    hours = capability(enrich.venue.id).default_interval_hours
    default = f"{hours:g}h" if hours else None
    for symbols in groups:
        lacking = [s for s in symbols if s in items and items[s].get("interval") is None]
        if not lacking:
            continue
        fn = client.fetch_funding_intervals
        intervals = await enrich.call("fetch_funding_intervals", fn, lacking, "funding interval")
        if intervals is None:
            continue
        for symbol in lacking:
            items[symbol]["interval"] = (intervals.get(symbol) or {}).get("interval") or default


async def fetch_snapshots(
    venue: ExchangeConfig,
    dataset: str,
    markets: dict[str, dict[str, Any]],
    per_symbol_max: int,
    done: dict[str, dict[str, Any]] | None = None,
    retry_enrichment: bool = False,
) -> Fetched:
    """Fetch ``dataset`` (``tickers``: ccxt ``fetch_tickers``/``fetch_ticker``;
    ``funding_rates``: ``fetch_funding_rates``/``fetch_funding_rate``) for the selected
    ``markets`` (``{symbol: ccxt market}``), per the venue's plan (``perpflow.capabilities``);
    lists of at most ``per_symbol_max`` symbols use the single-symbol call where ccxt has one.

    ``done``: items an earlier attempt of the same step already fetched (``{symbol: item}``);
    those symbols are not asked for again and the new items are added to it, so a retried step
    refetches only what failed. ``retry_enrichment``: a transient failure of an enrichment call
    (bid/ask, intervals) raises so that the step is retried (the items it would have completed
    are not kept in ``done``); without it the failure is noted in ``Fetched.notes`` and the values
    stay unknown. Returns ``Fetched`` (all items, ``done`` included). Raises
    ``ExchangeError`` when a bulk call fails (the whole step's trouble) and ``ValueError`` for a
    dataset the venue cannot serve.
    """
    done = {} if done is None else done
    async with exchange_client(venue) as client:
        with_markets(client, markets)
        plan = venue_profile(client, venue).plans[dataset]
        if not plan.supported:
            raise ValueError(f"dataset: {venue.label} cannot serve {dataset} ({plan.reason})")
        if plan.mode == BULK and plan.fallback and len(markets) <= per_symbol_max:
            plan = DatasetPlan(dataset, "per_symbol", plan.fallback, None, "short list")
        todo = [symbol for symbol in markets if symbol not in done]
        groups = _by_contract_type(markets, todo)
        items: dict[str, dict[str, Any]] = {}
        fetched = Fetched(items, 0)
        for symbols in groups:
            got, unparsed, failed = await _group(client, venue, plan, symbols)
            items.update(got)
            fetched.unparsed += unparsed
            fetched.failed.update(failed)
        enrich = Enrichment(venue, fetched, retry_enrichment)
        if dataset == "tickers":
            await _fill_bid_ask(client, enrich, groups, items)
        else:
            await _fill_intervals(client, enrich, groups, items)
    done.update(items)
    fetched.items = dict(done)
    fetched.received_ms = now_ms()
    return fetched
