"""ccxt async exchange factory: one configured client per venue, API base-URL override.

Everything that talks to an exchange goes through a ccxt ``async_support`` client built here, so
that ccxt's unified API and its rate limiter are the only exchange client the project has.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import fnmatch
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ccxt
import ccxt.async_support as ccxt_async

from perpflow.scope import borrow
from perpflow.settings import ExchangeConfig

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Capability:
    """What one ccxt venue needs beyond the unified API: data, not code branches.

    - ``ccxt_config``: constructor defaults (e.g. which market types ``load_markets`` fetches).
    - ``bid_ask_method``: ccxt method that adds bid/ask when ``fetch_tickers`` lacks them
      (binance USD-M's ``/fapi/v1/ticker/24hr`` has no book prices; ``fetch_bids_asks`` does).
    - ``funding_intervals_method``: ccxt method giving per-symbol funding intervals when the
      funding-rate endpoint does not (binance ``/fapi/v1/fundingInfo``); symbols it omits use
      ``default_interval_hours``.
    - ``history_page_limit``: the venue's page cap for ``fetch_funding_rate_history``.
    - ``history_until_param`` / ``history_until_exclusive``: how an upper time bound is passed to
      ``fetch_funding_rate_history`` (ccxt's unified ``until``, or okx's raw ``after``, which is
      exclusive).
    - ``rows_path`` / ``row_id_key``: where a bulk response keeps its rows and which field holds
      the venue's market id, so that when ccxt cannot parse a response the rows are parsed one by
      one and only the bad ones are quarantined.
    """

    ccxt_config: dict[str, Any]
    rows_path: tuple[str, ...] = ("data",)
    row_id_key: str = "symbol"
    bid_ask_method: str | None = None
    funding_intervals_method: str | None = None
    default_interval_hours: float | None = None
    history_page_limit: int = 100
    history_until_param: str = "until"
    history_until_exclusive: bool = False


CAPABILITIES: dict[str, Capability] = {
    "binanceusdm": Capability(
        ccxt_config={"options": {"fetchMarkets": {"types": ["linear"]}, "fetchCurrencies": False}},
        bid_ask_method="fetch_bids_asks",
        funding_intervals_method="fetch_funding_intervals",
        default_interval_hours=8,
        history_page_limit=1000,
        rows_path=(),
    ),
    "bybit": Capability(
        ccxt_config={"options": {"fetchMarkets": {"types": ["linear"]}}},
        history_page_limit=200,
        rows_path=("result", "list"),
    ),
    "okx": Capability(
        ccxt_config={"options": {"fetchMarkets": {"types": ["swap"]}}},
        history_page_limit=100,
        history_until_param="after",
        history_until_exclusive=True,
        row_id_key="instId",
    ),
}
GENERIC_CAPABILITY = Capability(ccxt_config={})


def capability(exchange_id: str) -> Capability:
    """The capability entry for a ccxt id (a conservative generic entry for unlisted venues)."""
    return CAPABILITIES.get(exchange_id, GENERIC_CAPABILITY)


class ExchangeError(Exception):
    """A venue call failed; raised once, at the exchange boundary, from a ccxt error.

    ``venue`` is the venue label, ``call`` the ccxt method, ``transient`` whether a retry may
    succeed (ccxt's NetworkError family: RequestTimeout, ExchangeNotAvailable, DDoSProtection,
    RateLimitExceeded). The message never contains credentials.
    """

    transient = False

    def __init__(self, venue: str, call: str, cause: BaseException):
        self.venue, self.call = venue, call
        super().__init__(f"{venue} {call}: {type(cause).__name__}: {str(cause)[:500]}")


class TransientExchangeError(ExchangeError):
    """A venue call failed in a way that a later retry may not (timeouts, 5xx, 429)."""

    transient = True


class PermanentExchangeError(ExchangeError):
    """A venue call failed in a way a retry will not fix (bad symbol, auth, bad request)."""


class PayloadError(PermanentExchangeError):
    """The venue answered, but ccxt could not parse the payload (e.g. a non-numeric price)."""


PARSE_ERRORS = (ValueError, TypeError, KeyError, IndexError, ArithmeticError, AttributeError)


async def call(venue: str, name: str, fn: Callable[..., Awaitable[T]], *args: Any, **kw: Any) -> T:
    """Await ``fn(*args, **kw)`` (a ccxt method) and translate ccxt errors into ExchangeError
    (and a parse failure inside ccxt into PayloadError)."""
    try:
        return await fn(*args, **kw)
    except ccxt.NetworkError as exc:
        raise TransientExchangeError(venue, name, exc) from exc
    except ccxt.BaseError as exc:
        raise PermanentExchangeError(venue, name, exc) from exc
    except PARSE_ERRORS as exc:
        raise PayloadError(venue, name, exc) from exc


Unparsed = list[tuple[dict[str, Any], str | None, str]]


async def _bulk(
    client: ccxt_async.Exchange, venue: ExchangeConfig, name: str, parser: str, symbols: list[str]
) -> tuple[dict[str, dict[str, Any]], Unparsed]:
    """Call the bulk ccxt method ``name``; if ccxt cannot parse the payload, parse its rows one
    by one with ``parser`` and return the ones it refuses as ``(raw row, symbol, reason)``."""
    try:
        return await call(venue.label, name, getattr(client, name), symbols), []
    except PayloadError:
        rows = client.last_json_response
        for key in capability(venue.id).rows_path:
            rows = rows.get(key) if isinstance(rows, dict) else None
        if not isinstance(rows, list):
            raise
    wanted, parsed, unparsed = set(symbols), {}, []
    id_key = capability(venue.id).row_id_key
    for raw in rows:
        symbol = client.safe_symbol(raw.get(id_key)) if isinstance(raw, dict) else None
        try:
            item = getattr(client, parser)(raw)
        except PARSE_ERRORS + (ccxt.BaseError,) as exc:
            if symbol in wanted:
                unparsed.append((raw, symbol, f"ccxt {parser}: {type(exc).__name__}: {exc}"))
            continue
        if item.get("symbol") in wanted:
            parsed[item["symbol"]] = item
    return parsed, unparsed


def rewrite_api_urls(api: Any, base_url: str) -> Any:
    """Point every entry of a ccxt ``urls['api']`` tree at ``base_url``, keeping each path.

    ``api`` is ccxt's ``exchange.urls['api']`` (a URL string or a nested dict of them, possibly
    with ccxt's ``{hostname}`` placeholder). Scheme and host of every URL are replaced by those of
    ``base_url`` and ``base_url``'s path is put in front of the original path, e.g. with
    ``base_url='http://127.0.0.1:8765/binanceusdm'``:
    ``'https://fapi.binance.com/fapi/v1'`` -> ``'http://127.0.0.1:8765/binanceusdm/fapi/v1'``.
    This is how a proxy, a testnet mirror or the local emulator is reached with unmodified ccxt.

    Raises ``ValueError`` (naming the value) when ``base_url`` is not an absolute http(s) URL.
    """
    base = urlsplit(base_url)
    if base.scheme not in ("http", "https") or not base.netloc:
        raise ValueError(f"api_url: expected an absolute http(s) URL, got {base_url!r}")
    prefix = f"{base.scheme}://{base.netloc}{base.path.rstrip('/')}"

    def rewrite(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: rewrite(item) for key, item in value.items()}
        if isinstance(value, str):
            path = urlsplit(value.replace("{hostname}", "host.invalid")).path
            return prefix + path.rstrip("/")
        return value

    return rewrite(api)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of two ccxt config dicts (``extra`` wins)."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


RequestHook = Callable[[], Awaitable[None]]
_before_request: contextvars.ContextVar[RequestHook | None] = contextvars.ContextVar(
    "perpflow_before_request", default=None
)


@contextmanager
def before_each_request(hook: RequestHook | None) -> Iterator[None]:
    """Within the block, every HTTP request a client of ``build_client`` sends (ccxt's
    ``fetch``: one per request, history pages and ccxt's own retries included) first awaits
    ``hook()``, e.g. a shared rate limit across processes. ``None`` adds nothing. The hook is
    taken from the calling context, so a client shared by several callers paces each with its
    own hook."""
    token = _before_request.set(hook)
    try:
        yield
    finally:
        _before_request.reset(token)


def _gate_requests(client: ccxt_async.Exchange) -> None:
    """Make ``client``'s HTTP requests await the current ``before_each_request`` hook."""
    send = client.fetch

    async def fetch(url, method="GET", headers=None, body=None):
        hook = _before_request.get()
        if hook is not None:
            await hook()
        return await send(url, method, headers, body)

    client.fetch = fetch


def _client_config(venue: ExchangeConfig) -> dict[str, Any]:
    """ccxt constructor config: capability defaults, then ``venue.ccxt_config``, then keys."""
    config = _merge(
        {"enableRateLimit": True, "enableLastJsonResponse": True}, capability(venue.id).ccxt_config
    )
    config = _merge(config, venue.ccxt_config)
    if venue.api_key is not None:
        config["apiKey"] = venue.api_key.get_secret_value()
    if venue.secret is not None:
        config["secret"] = venue.secret.get_secret_value()
    return config


def build_client(venue: ExchangeConfig) -> ccxt_async.Exchange:
    """A new ccxt async client for ``venue`` (rate limiter on; caller must ``close()`` it).

    Config is the venue capability's defaults, then ``venue.ccxt_config``, then credentials;
    with ``venue.api_url`` every ``urls['api']`` entry is rewritten to it. Each HTTP request
    first awaits the hook of ``before_each_request`` when one is set.
    """
    client = getattr(ccxt_async, venue.id)(_client_config(venue))
    if venue.api_url:
        client.urls["api"] = rewrite_api_urls(client.urls["api"], venue.api_url)
    _gate_requests(client)
    return client


def requests_per_second(venue: ExchangeConfig) -> float:
    """The venue's request budget in requests per second, from ccxt's ``rateLimit`` (ms between
    requests: the ccxt class default, or ``rateLimit`` in ``venue.ccxt_config``); the same
    figure ccxt's own throttler paces one client by."""
    return 1000.0 / float(getattr(ccxt, venue.id)(_client_config(venue)).rateLimit)


def exchange_client(venue: ExchangeConfig) -> AbstractAsyncContextManager[ccxt_async.Exchange]:
    """Async context manager giving the run's ccxt client for ``venue`` (see ``RunScope``): one
    client per venue per flow run, closed when the run's scope ends (or on exit, outside a run)."""
    return borrow(f"ccxt:{venue.model_dump_json()}", lambda: build_client(venue), _close)


async def _close(client: ccxt_async.Exchange) -> None:
    await client.close()


def is_linear_perpetual(market: dict[str, Any]) -> bool:
    """True for an active linear perpetual swap (settled in its quote currency).

    A market whose ``linear`` flag ccxt could not set (the venue's list lacks a category) counts
    as linear when it is not inverse and its settle currency equals its quote currency.
    """
    if not market.get("swap") or market.get("active") is False:
        return False
    if market.get("linear"):
        return True
    return market.get("inverse") is not True and market.get("settle") == market.get("quote")


def select_markets(markets: dict[str, dict[str, Any]], patterns: tuple[str, ...]) -> dict[str, dict]:
    """The linear perpetuals of ``markets`` (ccxt ``exchange.markets``) matching ``patterns``.

    ``patterns`` are fnmatch patterns on unified symbols; empty selects all. Returns
    ``{symbol: market}`` sorted by symbol.
    """
    chosen = {
        symbol: market
        for symbol, market in markets.items()
        if is_linear_perpetual(market)
        and (not patterns or any(fnmatch.fnmatchcase(symbol, p) for p in patterns))
    }
    return dict(sorted(chosen.items()))


async def load_perpetuals(venue: ExchangeConfig) -> dict[str, dict[str, Any]]:
    """Load ``venue``'s markets (ccxt ``load_markets``) and return its selected linear perpetuals.

    Returns ``{symbol: ccxt market dict}``. Raises ExchangeError.
    """
    async with exchange_client(venue) as client:
        markets = await call(venue.label, "load_markets", client.load_markets)
    return select_markets(markets, venue.symbols)


def _use_single(symbols: list[str], per_symbol_max: int) -> bool:
    return 0 < len(symbols) <= per_symbol_max


async def _per_symbol(venue: str, name: str, fn: Callable[..., Awaitable[dict]], symbols: list[str]):
    results = await asyncio.gather(*(call(venue, name, fn, symbol) for symbol in symbols))
    return {symbol: item for symbol, item in zip(symbols, results, strict=True)}


def _with_markets(client: ccxt_async.Exchange, markets: dict[str, dict[str, Any]]) -> None:
    """Give a client the markets loaded (and cached) earlier so that ccxt does not reload them."""
    if not client.markets:
        client.set_markets(markets)


def now_ms() -> int:
    """The current UTC time in milliseconds since the epoch."""
    return int(time.time() * 1000)


async def fetch_tickers(
    venue: ExchangeConfig, markets: dict[str, dict[str, Any]], per_symbol_max: int
) -> tuple[dict[str, dict[str, Any]], int, Unparsed]:
    """Fetch tickers for the selected ``markets`` (``{symbol: ccxt market}``).

    Uses ccxt ``fetch_tickers`` (``fetch_ticker`` per symbol for lists of at most
    ``per_symbol_max``), then fills bid/ask from the capability's ``bid_ask_method`` when set.
    Returns ``({symbol: ccxt unified ticker}, received_ms, unparsed)``: prices in quote currency,
    ``timestamp`` in UTC ms or None when the venue gives none; ``received_ms`` is the UTC ms
    receipt time; ``unparsed`` the raw rows ccxt could not parse, as ``(row, symbol, reason)``.
    Raises ExchangeError.
    """
    cap, symbols, unparsed = capability(venue.id), list(markets), []
    async with exchange_client(venue) as client:
        _with_markets(client, markets)
        if _use_single(symbols, per_symbol_max):
            tickers = await _per_symbol(venue.label, "fetch_ticker", client.fetch_ticker, symbols)
        else:
            tickers, unparsed = await _bulk(client, venue, "fetch_tickers", "parse_ticker", symbols)
        if cap.bid_ask_method:
            method = getattr(client, cap.bid_ask_method)
            books = await call(venue.label, cap.bid_ask_method, method, symbols)
            for symbol, ticker in tickers.items():
                book = books.get(symbol) or {}
                for field in ("bid", "ask", "bidVolume", "askVolume"):
                    if ticker.get(field) is None:
                        ticker[field] = book.get(field)
    return tickers, now_ms(), unparsed


async def fetch_funding_rates(
    venue: ExchangeConfig, markets: dict[str, dict[str, Any]], per_symbol_max: int
) -> tuple[dict[str, dict[str, Any]], int, Unparsed]:
    """Fetch current (and, where given, predicted) funding rates for the selected ``markets``.

    Uses ccxt ``fetch_funding_rates`` (``fetch_funding_rate`` per symbol for short lists or when
    the venue has no bulk call); where the capability names a ``funding_intervals_method`` the
    ``interval`` field (e.g. ``'8h'``) is filled from it (``default_interval_hours`` for symbols it
    omits; unknown when that call fails). Returns ``({symbol: ccxt funding-rate dict},
    received_ms, unparsed)`` with ``fundingRate`` as a fraction per funding interval, timestamps
    in UTC ms, and the raw rows ccxt could not parse. Raises ExchangeError.
    """
    cap, symbols, unparsed = capability(venue.id), list(markets), []
    async with exchange_client(venue) as client:
        _with_markets(client, markets)
        if _use_single(symbols, per_symbol_max) or not client.has.get("fetchFundingRates"):
            rates = await _per_symbol(
                venue.label, "fetch_funding_rate", client.fetch_funding_rate, symbols
            )
        else:
            rates, unparsed = await _bulk(
                client, venue, "fetch_funding_rates", "parse_funding_rate", symbols
            )
        if cap.funding_intervals_method:
            method = getattr(client, cap.funding_intervals_method)
            try:
                intervals = await call(venue.label, cap.funding_intervals_method, method, symbols)
            except ExchangeError as exc:  # auxiliary: the rates stand, the interval stays unknown
                log.warning("%s: funding intervals unavailable, stored as unknown: %s", venue.label, exc)
                return rates, now_ms(), unparsed
            default = f"{cap.default_interval_hours:g}h" if cap.default_interval_hours else None
            for symbol, rate in rates.items():
                if rate.get("interval") is None:
                    rate["interval"] = (intervals.get(symbol) or {}).get("interval") or default
    return rates, now_ms(), unparsed
