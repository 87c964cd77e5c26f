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
from functools import lru_cache
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import ccxt
import ccxt.async_support as ccxt_async

from perpflow import capabilities
from perpflow.scope import borrow
from perpflow.settings import CREDENTIALS, ExchangeConfig

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Capability:
    """What ccxt cannot tell about a venue: data, not code branches (everything else comes from
    ccxt through ``perpflow.capabilities``).

    - ``default_interval_hours``: the funding interval of symbols the venue's interval call leaves
      out (Binance's ``fundingInfo`` lists only symbols whose interval differs from 8 h).
    - ``history_page_limit``: the venue's page cap for ``fetch_funding_rate_history``.
    - ``history_until_param`` / ``history_until_exclusive``: how an upper time bound is passed to
      ``fetch_funding_rate_history`` (ccxt's unified ``until``, or okx's raw ``after``, which is
      exclusive).
    """

    default_interval_hours: float | None = None
    history_page_limit: int = 100
    history_until_param: str = "until"
    history_until_exclusive: bool = False


_BINANCE_FAMILY = Capability(default_interval_hours=8, history_page_limit=1000)
CAPABILITIES: dict[str, Capability] = {
    "binance": _BINANCE_FAMILY,
    "binanceusdm": _BINANCE_FAMILY,
    "binancecoinm": _BINANCE_FAMILY,
    "bybit": Capability(history_page_limit=200),
    "okx": Capability(history_page_limit=100, history_until_param="after",
                      history_until_exclusive=True),
}
GENERIC_CAPABILITY = Capability()


def capability(exchange_id: str) -> Capability:
    """The capability entry for a ccxt id (a conservative generic entry for unlisted venues)."""
    return CAPABILITIES.get(exchange_id, GENERIC_CAPABILITY)


class ExchangeError(Exception):
    """A venue call failed; raised once, at the exchange boundary, from a ccxt error.

    ``venue`` is the venue label, ``call`` the ccxt method, ``transient`` whether a retry may
    succeed, ``retry_after`` the seconds the venue asked to wait (its ``Retry-After`` header) or
    None. The message never contains credentials.
    """

    transient = False

    def __init__(self, venue: str, call: str, cause: BaseException, retry_after: float | None = None):
        self.venue, self.call, self.retry_after = venue, call, retry_after
        self.error_class = type(cause).__name__
        super().__init__(f"{venue} {call}: {self.error_class}: {str(cause)[:500]}")


class TransientExchangeError(ExchangeError):
    """A venue call failed in a way that a later retry may not: ccxt's ``OperationFailed``
    family (``NetworkError``: timeouts, 5xx, 429, maintenance; ``BadResponse``/``NullResponse``:
    a truncated or empty body), a connection reset mid-response, or a non-JSON page (an HTML
    error page served with status 200)."""

    transient = True


class PermanentExchangeError(ExchangeError):
    """A venue call failed in a way a retry will not fix (bad symbol, auth, bad request, not
    supported)."""


class PayloadError(PermanentExchangeError):
    """The venue answered JSON, but ccxt could not parse the payload (e.g. a non-numeric price)."""


PARSE_ERRORS = (ValueError, TypeError, KeyError, IndexError, ArithmeticError, AttributeError)
# Raised by aiohttp below ccxt when a connection drops while the body is read.
_RESETS = (ConnectionError, asyncio.IncompleteReadError, aiohttp.ClientPayloadError,
           aiohttp.ServerDisconnectedError)


def retry_after_seconds(headers: Any) -> float | None:
    """The ``Retry-After`` of response ``headers`` in seconds (delta-seconds or an HTTP date),
    else None."""
    if not headers:
        return None
    value = next((v for k, v in dict(headers).items() if str(k).lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        return max(0.0, parsedate_to_datetime(str(value)).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _answered_json(client: Any) -> bool:
    # ccxt keeps the last decoded JSON body; a page that was not JSON (HTML at 200) leaves None.
    return client is None or getattr(client, "last_json_response", None) is not None


async def call(venue: str, name: str, fn: Callable[..., Awaitable[T]], *args: Any, **kw: Any) -> T:
    """Await ``fn(*args, **kw)`` (a bound ccxt method) and translate what it raises into
    ``TransientExchangeError`` (ccxt ``OperationFailed`` family, connection resets, a non-JSON
    body), ``PayloadError`` (ccxt could not parse a JSON payload) or ``PermanentExchangeError``
    (every other ccxt error). A transient error carries the venue's ``Retry-After``."""
    client = getattr(fn, "__self__", None)
    try:
        return await fn(*args, **kw)
    except ccxt.OperationFailed as exc:
        headers = getattr(client, "last_response_headers", None)
        raise TransientExchangeError(venue, name, exc, retry_after_seconds(headers)) from exc
    except ccxt.BaseError as exc:
        raise PermanentExchangeError(venue, name, exc) from exc
    except _RESETS as exc:
        raise TransientExchangeError(venue, name, exc) from exc
    except PARSE_ERRORS as exc:
        if not _answered_json(client):
            raise TransientExchangeError(venue, name, exc) from exc
        raise PayloadError(venue, name, exc) from exc


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
    """ccxt constructor config: rate limiter and last-JSON on, no currency list (the collectors
    never need it, and on some venues it is a private call), then ``venue.ccxt_config``, then
    credentials."""
    config = _merge(
        {"enableRateLimit": True, "enableLastJsonResponse": True, "has": {"fetchCurrencies": False}},
        venue.ccxt_config,
    )
    for field, ccxt_key in CREDENTIALS.items():
        if (value := getattr(venue, field)) is not None:
            config[ccxt_key] = value.get_secret_value()
    return config


def _load_only_perpetual_types(client: ccxt_async.Exchange, venue: ExchangeConfig) -> None:
    """Make ``load_markets`` fetch only the market lists that can hold the wanted perpetuals
    (``capabilities.swap_market_types``), unless ``venue.ccxt_config`` sets the types itself."""
    if "types" in (venue.ccxt_config.get("options", {}).get("fetchMarkets") or {}):
        return
    option = client.options.get("fetchMarkets")
    types = capabilities.swap_market_types(option, venue.contract_types)
    if types is not None:
        client.options["fetchMarkets"] = {**option, "types": types}


def build_client(venue: ExchangeConfig) -> ccxt_async.Exchange:
    """A new ccxt async client for ``venue`` (rate limiter on; caller must ``close()`` it).

    Config: see ``_client_config``; market loading is limited to perpetual market types; with
    ``venue.api_url`` every ``urls['api']`` entry is rewritten to it. Each HTTP request first
    awaits the hook of ``before_each_request`` when one is set.
    """
    client = getattr(ccxt_async, venue.id)(_client_config(venue))
    _load_only_perpetual_types(client, venue)
    if venue.api_url:
        client.urls["api"] = rewrite_api_urls(client.urls["api"], venue.api_url)
    _gate_requests(client)
    return client


@lru_cache(maxsize=256)
def offline_profile(venue: ExchangeConfig) -> capabilities.VenueProfile:
    """``venue``'s profile from its configured ccxt class, built without a client or a request
    (for plans and time budgets decided before a step runs)."""
    return capabilities.profile(getattr(ccxt, venue.id)(_client_config(venue)), venue.contract_types)


def venue_profile(client: ccxt_async.Exchange, venue: ExchangeConfig) -> capabilities.VenueProfile:
    """What the collectors do with ``venue``, from its configured ccxt client."""
    return capabilities.profile(client, venue.contract_types)


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


def contract_type(market: dict[str, Any]) -> str:
    """``'inverse'`` for a coin-settled contract (ccxt ``inverse``), else ``'linear'`` (ccxt
    ``linear``, or settled in its quote currency where the venue's list lacks the flag)."""
    if market.get("inverse") is True:
        return "inverse"
    if market.get("linear") is False and market.get("settle") not in (None, market.get("quote")):
        return "inverse"
    return "linear"


def is_perpetual(market: dict[str, Any]) -> bool:
    """True for a ccxt market that is a perpetual swap (``swap``) and not marked inactive."""
    return bool(market.get("swap")) and market.get("active") is not False


def _named(symbol: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(symbol, p) for p in patterns)


def select_markets(
    markets: dict[str, dict[str, Any]],
    patterns: tuple[str, ...],
    contract_types: tuple[str, ...] = capabilities.CONTRACT_TYPES,
) -> dict[str, dict]:
    """The perpetuals of ``markets`` (ccxt ``exchange.markets``) to collect.

    ``patterns`` are fnmatch patterns on unified symbols (empty: all); ``contract_types`` the
    contract types (``linear``, ``inverse``) taken. A symbol named exactly in ``patterns`` is
    taken whatever its contract type. Returns ``{symbol: market}`` sorted by symbol.
    """
    chosen = {
        symbol: market
        for symbol, market in markets.items()
        if is_perpetual(market)
        and (symbol in patterns
             or (contract_type(market) in contract_types and (not patterns or _named(symbol, patterns))))
    }
    return dict(sorted(chosen.items()))


def unmatched_patterns(selected: dict[str, dict[str, Any]], patterns: tuple[str, ...]) -> list[str]:
    """The ``patterns`` that matched none of the ``selected`` symbols (each worth a warning: a
    misspelled symbol collects nothing)."""
    return [p for p in patterns if not any(fnmatch.fnmatchcase(s, p) for s in selected)]


async def load_perpetuals(venue: ExchangeConfig) -> dict[str, dict[str, Any]]:
    """Load ``venue``'s markets (ccxt ``load_markets``, perpetual market types only) and return
    the selected perpetuals as ``{symbol: ccxt market dict}``. Raises ExchangeError."""
    async with exchange_client(venue) as client:
        markets = await call(venue.label, "load_markets", client.load_markets)
    return select_markets(markets, venue.symbols, venue.contract_types)


def with_markets(client: ccxt_async.Exchange, markets: dict[str, dict[str, Any]]) -> None:
    """Give a client the markets loaded (and cached) earlier so that ccxt does not reload them."""
    if not client.markets:
        client.set_markets(markets)



def now_ms() -> int:
    """The current UTC time in milliseconds since the epoch."""
    return int(time.time() * 1000)
