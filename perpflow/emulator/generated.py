"""Generated venues: a deterministic synthetic market served in one real venue's REST format."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping

from perpflow.emulator.formats import FORMATS
from perpflow.emulator.market import DAY_MS, SyntheticMarket, floor_to
from perpflow.emulator.wire import Reply

DEFAULT_LISTING_DAYS = 30


def wall_clock_ms() -> int:
    """Current UTC time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


class GeneratedVenue:
    """A synthetic venue named ``name`` (its URL prefix) speaking ``format``'s REST dialect.

    ``format`` is one of ``FORMATS`` (``binanceusdm``, ``bybit``, ``okx``, ``binancecoinm``,
    ``cryptocom``, ``hyperliquid``, ``kucoinfutures``, ``phemex``); ``name`` defaults to
    the format and ``format`` to the name, so ``GeneratedVenue("bybit")`` and
    ``GeneratedVenue("bybit-7", "bybit")`` both work. The venue lists ``symbols`` perpetuals
    (``BTC``, ``ETH``, then ``C001``, ``C002``...; linear USDT unless the format says otherwise:
    USDC on hyperliquid, USD on cryptocom, inverse USD on binancecoinm) plus the few extra
    instruments its
    format adds (dated futures, inverse or USDC swaps, a pre-launch listing; see each format).
    Prices, funding rates and intervals are deterministic functions of ``seed``, ``name``,
    instrument and time; ``now_ms`` is the clock (UTC ms; default the wall clock). Funding
    history starts at ``listed_ms`` (default: UTC midnight ``DEFAULT_LISTING_DAYS`` days before
    the clock's time at construction).

    Bad rows for quarantine tests: ``malformed`` maps an instrument, given by the venue's own id
    (``"BTCUSDT"``, ``"BTC-USDT-SWAP"``) or by its position in ``instruments`` (0 is BTC), to
    ``"negative_price"``, ``"non_numeric_price"`` or ``"missing_symbol"``; it alters that
    instrument's row in the tickers response (Binance ``ticker/24hr``, Bybit ``tickers``, which
    also feeds ccxt's funding rates there, OKX ``market/tickers``). ``drop_tickers`` (0 <= f < 1)
    leaves a deterministic fraction of the instruments out of that response.

    ``ccxt_config`` is the ccxt constructor config the format needs (e.g. which market types
    ``load_markets`` fetches); ``{}`` when ccxt's defaults do.

    Raises ``ValueError`` for an unknown format, a bad count, malformed key or kind, or fraction.
    """

    def __init__(
        self,
        name: str | None = None,
        format: str | None = None,
        *,
        symbols: int = 300,
        seed: int = 7,
        now_ms: Callable[[], int] = wall_clock_ms,
        listed_ms: int | None = None,
        malformed: Mapping[str | int, str] | None = None,
        drop_tickers: float = 0.0,
    ) -> None:
        format = format or name
        if format not in FORMATS:
            raise ValueError(f"format: expected one of {sorted(FORMATS)}, got {format!r}")
        self.name = name or format
        self.format = format
        self.now_ms = now_ms
        fmt = FORMATS[format]
        self.ccxt_config: dict = copy.deepcopy(dict(fmt.ccxt_config))
        created = now_ms()
        self.market = SyntheticMarket(
            self.name, symbols, fmt.extras, seed,
            listed_ms if listed_ms is not None else floor_to(created, DAY_MS)
            - DEFAULT_LISTING_DAYS * DAY_MS,
            created, fmt.funding_cap, fmt.perpetual_quote, fmt.perpetual_inverse,
            fmt.funding_interval_h,
        )
        self.dialect = fmt(self.market, malformed, drop_tickers)

    @property
    def market_ids(self) -> list[str]:
        """The venue's own instrument ids, by position (``market.instruments`` order)."""
        return self.dialect.ids

    def handle(
        self, method: str, path: str, query: Mapping[str, str], body: bytes | None = None
    ) -> Reply:
        """Answer ``method path?query`` (path without the venue prefix; ``body``: the raw request
        body of a POST) at the clock's time."""
        return self.dialect.handle(method, path, query, self.now_ms(), body)

    def fault_reply(self, status: int, detail: str = "") -> Reply:
        """The body this venue sends with an injected HTTP ``status`` (``detail``: the path)."""
        return self.dialect.errors.for_status(status, self.now_ms(), detail)
