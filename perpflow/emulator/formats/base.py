"""The part every generated venue format shares: routing, instrument lookup, ticker tampering."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import ClassVar

from perpflow.emulator.market import (
    TRADING, Instrument, InstrumentSpec, IntervalSchedule, SyntheticMarket, unit,
)
from perpflow.emulator.quirks import InstrumentKey, Quirks
from perpflow.emulator.wire import ErrorStyle, Reply, VenueError

Handler = Callable[[Mapping[str, str], int], Reply]
PostHandler = Callable[[bytes, int], Reply]

MALFORMED_KINDS = ("negative_price", "non_numeric_price", "missing_symbol")
NON_NUMERIC_PRICE = "n/a"


class TickerTamper:
    """Deliberately bad ticker rows for quarantine tests.

    ``malformed`` maps an instrument position (index into ``SyntheticMarket.instruments``) to one
    of ``MALFORMED_KINDS``: ``negative_price`` (last price sign flipped), ``non_numeric_price``
    (last price ``"n/a"``) or ``missing_symbol`` (the row's symbol field removed). Instruments
    whose position is in ``dropped`` are left out of the tickers response entirely.
    """

    def __init__(self, malformed: Mapping[int, str], dropped: frozenset[int]) -> None:
        self.malformed = dict(malformed)
        self.dropped = dropped

    @classmethod
    def build(
        cls, market: SyntheticMarket, by_id: Mapping[str, int], malformed: Mapping[str | int, str],
        drop_fraction: float,
    ) -> TickerTamper:
        """From ``malformed`` keyed by venue id or position, and the fraction of instruments to
        drop (chosen deterministically from each instrument's key). Raises ``ValueError`` for
        an unknown instrument or kind, or a fraction outside ``[0, 1)``."""
        if not 0.0 <= drop_fraction < 1.0:
            raise ValueError(f"drop_tickers: expected a fraction in [0, 1), got {drop_fraction!r}")
        positions = {}
        for key, kind in malformed.items():
            if kind not in MALFORMED_KINDS:
                raise ValueError(f"malformed: kind must be one of {MALFORMED_KINDS}, got {kind!r}")
            position = key if isinstance(key, int) else by_id.get(key, -1)
            if not 0 <= position < len(market.instruments):
                raise ValueError(f"malformed: no instrument {key!r} on this venue")
            positions[position] = kind
        dropped = frozenset(
            p for p, inst in enumerate(market.instruments) if unit(inst.key, 99) < drop_fraction
        )
        return cls(positions, dropped)

    def apply(
        self, rows: Iterable[tuple[int, dict]], symbol_field: str, last_field: str
    ) -> list[dict]:
        """The rows (``(position, row)`` pairs) as served: dropped ones removed, malformed ones
        altered in place."""
        served = []
        for position, row in rows:
            if position in self.dropped:
                continue
            kind = self.malformed.get(position)
            if kind == "negative_price":
                row[last_field] = "-" + row[last_field]
            elif kind == "non_numeric_price":
                row[last_field] = NON_NUMERIC_PRICE
            elif kind == "missing_symbol":
                del row[symbol_field]
            served.append(row)
        return served


class GeneratedFormat:
    """One venue's REST dialect over a ``SyntheticMarket``.

    Subclasses set the class data (``ccxt_id``, ``extras``: non-default instruments the venue
    lists, ``funding_cap``: bound on |rate| per interval, ``errors``, the symbol and last-price
    field names of their ticker rows, ``history_path``: the funding-history route, and
    ``unsupported``: the ``Quirks`` fields their real venue's API cannot show, with the reason),
    ``market_id`` and ``routes``. ``malformed`` and ``drop_tickers`` configure the
    ``TickerTamper`` (see ``GeneratedVenue``); ``quirks`` the venue's ``Quirks``: interval
    schedules are applied to ``market`` here (so ``self.market`` may be a rescheduled copy).
    Optional class data: ``perpetual_quote`` / ``perpetual_inverse`` (quote currency of the
    generated perpetuals and whether they settle in their base coin), ``funding_interval_h``
    (every perpetual's funding interval in hours; ``None``: drawn per instrument),
    ``ccxt_config`` (what ccxt's constructor needs to load only the swaps) and ``post_routes``
    (venues whose API is POST with a JSON body).
    Raises ``ValueError`` for a quirk the format cannot realise or an unknown instrument.
    """

    ccxt_id: ClassVar[str]
    extras: ClassVar[tuple[InstrumentSpec, ...]]
    funding_cap: ClassVar[float]
    errors: ClassVar[ErrorStyle]
    symbol_field: ClassVar[str]
    last_field: ClassVar[str]
    history_path: ClassVar[str]
    unsupported: ClassVar[Mapping[str, str]] = {}
    perpetual_quote: ClassVar[str] = "USDT"
    perpetual_inverse: ClassVar[bool] = False
    funding_interval_h: ClassVar[int | None] = None
    ccxt_config: ClassVar[Mapping] = {}

    def __init__(
        self, market: SyntheticMarket, malformed: Mapping[str | int, str] | None = None,
        drop_tickers: float = 0.0, quirks: Quirks | None = None,
    ) -> None:
        self.quirks = quirks or Quirks()
        self.check_quirks(self.quirks)
        self.market = market
        self.ids = [self.market_id(inst) for inst in market.instruments]
        self.by_id = {market_id: position for position, market_id in enumerate(self.ids)}
        self.market = market.with_intervals(self._schedules())
        self.stale = self._stale_positions()
        self.tamper = TickerTamper.build(market, self.by_id, malformed or {}, drop_tickers)
        self.order = self.listing_order()
        self._routes = self.routes()
        self._post_routes = self.post_routes()
        if self.quirks.no_funding_history:
            del self._routes[self.history_path]

    @classmethod
    def check_quirks(cls, quirks: Quirks) -> None:
        """Raise ``ValueError`` when ``quirks`` asks for something this format cannot show."""
        for name in quirks.active():
            if name in cls.unsupported:
                raise ValueError(f"quirks: the {cls.ccxt_id} format cannot realise {name}: "
                                 f"{cls.unsupported[name]}")

    @classmethod
    def extras_for(cls, quirks: Quirks) -> tuple[InstrumentSpec, ...]:
        """The non-default instruments listed under ``quirks`` (default: ``extras``)."""
        return cls.extras

    def position_of(self, key: InstrumentKey) -> int:
        """Position of an instrument named by venue id, unified symbol or position; raises
        ``ValueError`` when there is no such instrument."""
        instruments = self.market.instruments
        if isinstance(key, int):
            position = key
        elif "/" in key:
            position = next((p for p, i in enumerate(instruments) if i.symbol == key), -1)
        else:
            position = self.by_id.get(key, -1)
        if not 0 <= position < len(instruments):
            raise ValueError(f"quirks: no instrument {key!r} on this venue")
        return position

    def _schedules(self) -> dict[int, IntervalSchedule]:
        hours = {self.position_of(key): h for key, h in self.quirks.intervals}
        changes: dict[int, list[tuple[int, int]]] = {}
        for key, at_ms, h in self.quirks.interval_changes:
            changes.setdefault(self.position_of(key), []).append((at_ms, h))
        return {
            p: IntervalSchedule(hours.get(p), tuple(sorted(changes.get(p, ()))))
            for p in hours.keys() | changes.keys()
        }

    def _stale_positions(self) -> frozenset[int]:
        chosen = {self.position_of(key) for key in self.quirks.stale_instruments}
        fraction = self.quirks.stale_fraction
        chosen |= {p for p, inst in enumerate(self.market.instruments)
                   if unit(inst.key, 98) < fraction}
        return frozenset(chosen)

    def venue_time(self, position: int, inst: Instrument, now_ms: int) -> int:
        """The time on an instrument's ticker and funding rows: ``now_ms``, or for an instrument
        that trades only now and then (``Quirks.stale_instruments``) its last trade's time."""
        if position not in self.stale:
            return now_ms
        return self.market.last_trade_ms(inst, now_ms, self.quirks.trade_every_min * 60_000)

    def history_times(
        self, inst: Instrument, lo_ms: int | None, hi_ms: int | None, limit: int, now_ms: int,
        start_anchored: bool,
    ) -> list[int]:
        """Settlement times (ascending) of one funding-history page for the inclusive window
        ``[lo_ms, hi_ms]`` (``None``: open) and ``limit`` (already clamped to the venue's cap), as
        the venue's ``Quirks`` make it: ignored bounds dropped, ``history_page_cap`` applied. A
        page is anchored at its start when there is a lower bound and the venue does that
        (``start_anchored``, Binance) or ignores the upper bound; else at its newest end."""
        quirks = self.quirks
        if quirks.history_ignores_since:
            lo_ms = None
        if quirks.history_ignores_until:
            hi_ms = None
        if quirks.history_page_cap is not None:
            limit = min(limit, quirks.history_page_cap)
        oldest_first = lo_ms is not None and (start_anchored or quirks.history_ignores_until)
        top = now_ms if hi_ms is None else min(hi_ms, now_ms)
        return self.market.settlement_page(inst, lo_ms, top, limit, oldest_first)

    def refuse_bulk(self, market_id: str | None, tickers: bool) -> None:
        """Raise the venue's error for an all-symbols request (``market_id`` empty) when the
        quirks forbid it: ``too_many_symbols`` for tickers (``single_symbol_tickers``),
        ``bad_param`` for funding (``no_bulk_funding``)."""
        if market_id:
            return
        if tickers and self.quirks.single_symbol_tickers:
            raise VenueError("too_many_symbols", self.symbol_field)
        if not tickers and self.quirks.no_bulk_funding:
            raise VenueError("bad_param", self.symbol_field)

    @staticmethod
    def market_id(inst: Instrument) -> str:
        """The venue's own id of ``inst`` (``BTCUSDT``, ``BTC-USDT-SWAP``...)."""
        raise NotImplementedError

    def listing_order(self) -> list[int]:
        """Positions in the order the venue lists its instruments (default: generation order)."""
        return list(range(len(self.ids)))

    def routes(self) -> dict[str, Handler]:
        """Path (without the venue prefix) -> handler ``(query, now_ms) -> Reply``."""
        raise NotImplementedError

    def post_routes(self) -> dict[str, PostHandler]:
        """Path -> handler ``(body, now_ms) -> Reply`` of POST requests (default: none)."""
        return {}

    def handle(
        self, method: str, path: str, query: Mapping[str, str], now_ms: int,
        body: bytes | None = None,
    ) -> Reply:
        """Answer one request (``body``: the raw POST body); unknown routes and rejected
        parameters get the venue's error."""
        try:
            if method == "POST" and path in self._post_routes:
                return self._post_routes[path](body or b"", now_ms)
            handler = self._routes.get(path)
            if handler is None or method != "GET":
                return self.errors.reply("not_found", now_ms, detail=path)
            return handler(query, now_ms)
        except VenueError as error:
            return self.errors.reply(error.kind, now_ms, detail=error.detail)

    def lookup(self, market_id: str | None, funded: bool = False) -> tuple[int, Instrument]:
        """``(position, instrument)`` for the venue id; raises ``VenueError('bad_symbol')`` when
        unknown (or, with ``funded``, when it pays no funding)."""
        position = self.by_id.get(market_id or "")
        if position is None:
            raise VenueError("bad_symbol", market_id or "")
        inst = self.market.instruments[position]
        if funded and inst.interval_h is None:
            raise VenueError("bad_symbol", market_id or "")
        return position, inst

    def selected(self, market_id: str | None) -> list[tuple[int, Instrument]]:
        """The one instrument named by ``market_id``, or every listed (non-prelaunch) one."""
        if market_id:
            return [self.lookup(market_id)]
        instruments = self.market.instruments
        return [(p, instruments[p]) for p in self.order if instruments[p].status == TRADING]

    def tampered(self, rows: Iterable[tuple[int, dict]]) -> list[dict]:
        """Ticker rows after the configured malformed/dropped alterations."""
        return self.tamper.apply(rows, self.symbol_field, self.last_field)
