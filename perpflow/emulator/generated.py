"""Generated venues: a deterministic synthetic market served in one real venue's REST format."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from perpflow.emulator.formats import FORMATS
from perpflow.emulator.market import DAY_MS, Instrument, SyntheticMarket, floor_to
from perpflow.emulator.quirks import Quirks
from perpflow.emulator.wire import Reply

DEFAULT_LISTING_DAYS = 30


def wall_clock_ms() -> int:
    """Current UTC time in epoch milliseconds."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class ExpectedCurrent:
    """Ground truth of one perpetual's current values at ``now_ms`` (before the venue's number
    formatting: prices are unrounded except ``last``, which is on the tick grid).

    ``venue_ms``: the time on its ticker and funding rows (UTC ms; ``now_ms``, or the last trade's
    time for a ``Quirks.stale_instruments`` one; Bybit rows have none, ccxt uses the response
    time there); ``last``: last-trade price as of ``venue_ms``; ``mark``, ``index``: as of
    ``now_ms`` (quote currency); ``funding_rate``: the rate shown for the settlement at
    ``funding_ms`` (fraction per interval); ``interval_h``: the interval ending at it (hours);
    ``next_funding_ms``: the settlement after that one; ``base_volume``: 24h volume as of
    ``venue_ms`` in base currency.
    """

    symbol: str
    now_ms: int
    venue_ms: int
    last: float
    mark: float
    index: float
    funding_rate: float
    funding_ms: int
    interval_h: int
    next_funding_ms: int
    base_volume: float


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

    ``quirks`` (a ``Quirks``) switches on venue behaviours that lose data (history order, bounds
    and page caps, no bulk endpoints, stale ticker times, contract sizes, inverse contracts,
    funding-interval schedules, an unserved history endpoint); each format says which it
    realises. Ground truth for tests: ``expected_settlements`` and ``expected_current``.

    ``ccxt_config`` is the ccxt constructor config the format needs (e.g. which market types
    ``load_markets`` fetches); ``{}`` when ccxt's defaults do.

    Raises ``ValueError`` for an unknown format, a bad count, malformed key or kind, or fraction,
    or a quirk the format cannot realise.
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
        quirks: Quirks | None = None,
    ) -> None:
        format = format or name
        if format not in FORMATS:
            raise ValueError(f"format: expected one of {sorted(FORMATS)}, got {format!r}")
        self.name = name or format
        self.format = format
        self.now_ms = now_ms
        self.quirks = quirks or Quirks()
        fmt = FORMATS[format]
        self.ccxt_config: dict = copy.deepcopy(dict(fmt.ccxt_config))
        created = now_ms()
        market = SyntheticMarket(
            self.name, symbols, fmt.extras_for(self.quirks), seed,
            listed_ms if listed_ms is not None else floor_to(created, DAY_MS)
            - DEFAULT_LISTING_DAYS * DAY_MS,
            created, fmt.funding_cap, fmt.perpetual_quote, fmt.perpetual_inverse,
            fmt.funding_interval_h,
        )
        self.dialect = fmt(market, malformed, drop_tickers, self.quirks)
        self.market = self.dialect.market  # with the quirks' interval schedules

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

    def instrument(self, symbol: str) -> tuple[int, Instrument]:
        """``(position, instrument)`` of a ccxt unified symbol (``BTC/USDT:USDT``), a venue id or a
        position; raises ``ValueError`` when the venue has no such instrument."""
        position = self.dialect.position_of(symbol)
        return position, self.market.instruments[position]

    def expected_settlements(
        self, symbol: str, start_ms: int | None = None, end_ms: int | None = None
    ) -> list[tuple[str, int, float]]:
        """Ground truth: every funding settlement ``(symbol, settle_ms, rate)`` of ``symbol``
        (unified symbol, venue id or position) with ``start_ms <= settle_ms <= end_ms`` (UTC ms;
        ``None``: from the listing / up to the clock's now), ascending, interval changes
        included; rates as fractions per interval, exactly as the history endpoint serves them.
        Raises ``ValueError`` for an unknown or unfunded instrument."""
        _, inst = self.instrument(symbol)
        if inst.interval_h is None:
            raise ValueError(f"{symbol!r} is a dated future without funding")
        end = self.now_ms() if end_ms is None else min(end_ms, self.now_ms())
        return [(inst.symbol, t, rate) for t, rate in self.market.settlements(inst, start_ms, end)]

    def expected_current(self, symbol: str, now_ms: int | None = None) -> ExpectedCurrent:
        """Ground truth of a perpetual's ticker and funding values at ``now_ms`` (default: the
        clock's now), as the venue serves them; see ``ExpectedCurrent``. Raises ``ValueError``
        for an unknown or unfunded instrument."""
        position, inst = self.instrument(symbol)
        if inst.interval_h is None:
            raise ValueError(f"{symbol!r} is a dated future without funding")
        now = self.now_ms() if now_ms is None else now_ms
        venue_ms = self.dialect.venue_time(position, inst, now)
        traded, moving = self.market.quote(inst, venue_ms), self.market.quote(inst, now)
        funding_ms = self.market.next_funding_ms(inst, now)
        return ExpectedCurrent(
            symbol=inst.symbol, now_ms=now, venue_ms=venue_ms, last=traded.last,
            mark=moving.mark, index=moving.index,
            funding_rate=self.market.funding_rate(inst, funding_ms), funding_ms=funding_ms,
            interval_h=self.market.interval_h_at(inst, funding_ms),
            next_funding_ms=self.market.next_funding_ms(inst, funding_ms),
            base_volume=traded.base_volume,
        )
