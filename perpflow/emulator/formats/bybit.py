"""Bybit v5 public market data (``category=linear``), as ccxt's ``bybit`` reads it.

Every body is the envelope ``{"retCode": 0, "retMsg": "OK", "result": {...}, "retExtInfo": {},
"time": ms}``; numbers and times inside ``result`` are strings. Business errors come with HTTP 200
and a non-zero ``retCode`` (``10001`` parameter error, ``10006`` too many visits).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import UTC, datetime

from perpflow.emulator.formats.base import GeneratedFormat, Handler
from perpflow.emulator.market import (
    FUTURE, HOUR_MS, PRELAUNCH, TRADING, Instrument, InstrumentSpec,
)
from perpflow.emulator.quirks import Quirks
from perpflow.emulator.wire import (
    ErrorStyle, Reply, VenueError, fixed, int_param, json_reply, page_limit, trimmed,
)

INSTRUMENTS_DEFAULT, INSTRUMENTS_CAP = 500, 1000
HISTORY_CAP = 200
INVERSE = (InstrumentSpec("BTC", "USD", "BTC"), InstrumentSpec("ETH", "USD", "ETH"))


def envelope(result: object, now_ms: int, code: int = 0, message: str = "OK") -> dict:
    """Bybit's response envelope around ``result``."""
    return {"retCode": code, "retMsg": message, "result": result, "retExtInfo": {}, "time": now_ms}


ERRORS = ErrorStyle(
    envelope=lambda code, message, now_ms: envelope({}, now_ms, code, message),
    kinds={
        "bad_symbol": (200, 10001, "Not supported symbols"),
        "bad_param": (200, 10001, "params error: {} invalid"),
        "rate_limited": (200, 10006, "Too many visits!"),
        "unavailable": (503, None, "Service Unavailable"),
        "not_found": (404, 404, "Not Found: {}"),
        "too_many_symbols": (200, 10001, "params error: {} cannot contain more than 1 symbol"),
    },
)


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset={offset}".encode()).decode()


def _offset(cursor: str) -> int:
    try:
        return int(base64.urlsafe_b64decode(cursor.encode()).decode().removeprefix("offset="))
    except ValueError:
        raise VenueError("bad_param", "cursor") from None


class BybitFormat(GeneratedFormat):
    """``/v5/market/...``: instruments-info (alphabetical, ``limit``/``cursor`` pages of at most
    1000, ``status`` filter with PreLaunch instruments only on request), tickers (funding fields
    included, no per-row time), funding/history (newest first, page cap 200, window
    ``[startTime, endTime]`` anchored at its end) and time. Only ``category=linear`` (and
    ``category=inverse`` with ``Quirks.inverse``) has instruments; other categories answer empty
    lists.

    Quirks: every history quirk (rows are natively newest first), ``no_bulk_funding`` and
    ``single_symbol_tickers`` (both refuse the tickers request without ``symbol``, which also
    serves ccxt's funding rates: 10001), ``inverse`` (``BTCUSD``/``ETHUSD`` inverse perpetuals
    under ``category=inverse``: ``volume24h`` in contracts of 1 USD, ``turnover24h`` in coin),
    intervals and changes (``fundingInterval`` minutes and ``fundingIntervalHour`` follow the
    interval in force). Not ``stale_instruments`` (no per-row time) or ``contract_size``.
    """

    ccxt_id = "bybit"
    extras = (
        InstrumentSpec("BTC", "USDC", "USDC"),
        InstrumentSpec("BTC", "USDT", "USDT", FUTURE),
        InstrumentSpec("ETH", "USDT", "USDT", FUTURE),
        InstrumentSpec("P001", "USDT", "USDT", status=PRELAUNCH),
    )
    funding_cap = 0.02
    errors = ERRORS
    symbol_field = "symbol"
    last_field = "lastPrice"
    history_path = "/v5/market/funding/history"
    unsupported = {
        "stale_instruments": "tickers rows carry no time of their own (only the response's)",
        "stale_fraction": "tickers rows carry no time of their own (only the response's)",
        "contract_size": "linear contracts are one unit of the base coin and volume24h is in "
                         "base coin",
    }

    @classmethod
    def extras_for(cls, quirks: Quirks) -> tuple[InstrumentSpec, ...]:
        """The default extras, plus BTC and ETH inverse perpetuals with ``quirks.inverse``."""
        return cls.extras + (INVERSE if quirks.inverse else ())

    @staticmethod
    def category_of(inst: Instrument) -> str:
        """``inverse`` for coin-settled contracts, else ``linear``."""
        return "inverse" if inst.inverse else "linear"

    @staticmethod
    def market_id(inst: Instrument) -> str:
        """``BTCUSDT`` (USDT perpetual), ``BTCPERP`` (USDC perpetual), ``BTCUSDT-27MAR26``
        (USDT future)."""
        if inst.expiry_ms is not None:
            expiry = datetime.fromtimestamp(inst.expiry_ms / 1000, UTC)
            return f"{inst.base}{inst.quote}-{expiry:%d%b%y}".upper()
        return inst.base + ("PERP" if inst.quote == "USDC" else inst.quote)

    def listing_order(self) -> list[int]:
        """Alphabetical by symbol, as Bybit lists."""
        return sorted(range(len(self.ids)), key=self.ids.__getitem__)

    def routes(self) -> dict[str, Handler]:
        return {
            "/v5/market/instruments-info": self.instruments_info,
            "/v5/market/tickers": self.tickers,
            "/v5/market/funding/history": self.funding_history,
            "/v5/market/time": self.time,
        }

    @staticmethod
    def _category(query: Mapping[str, str]) -> str:
        category = query.get("category")
        if category not in ("linear", "inverse", "spot", "option"):
            raise VenueError("bad_param", "category")
        return category

    def _instrument_entry(self, position: int, inst: Instrument, now_ms: int) -> dict:
        tick = fixed(10**-inst.price_decimals, inst.price_decimals)
        step = "1" if inst.inverse else fixed(10**-inst.qty_decimals, inst.qty_decimals)
        cap = trimmed(self.funding_cap)
        kind = "Perpetual" if inst.expiry_ms is None else "Futures"
        interval_min = (
            0 if inst.interval_h is None else self.market.current_interval_h(inst, now_ms) * 60
        )
        return {
            "symbol": self.ids[position],
            "contractType": ("Inverse" if inst.inverse else "Linear") + kind,
            "status": "PreLaunch" if inst.status == PRELAUNCH else "Trading",
            "baseCoin": inst.base,
            "quoteCoin": inst.quote,
            "launchTime": str(inst.listed_ms),
            "deliveryTime": str(inst.expiry_ms or 0),
            "deliveryFeeRate": "" if inst.expiry_ms is None else "0.0005",
            "priceScale": str(inst.price_decimals),
            "leverageFilter": {"minLeverage": "1", "maxLeverage": "50.00", "leverageStep": "0.01"},
            "priceFilter": {"minPrice": tick,
                            "maxPrice": fixed(inst.ref_price * 20, inst.price_decimals),
                            "tickSize": tick},
            "lotSizeFilter": {"maxOrderQty": "1000000", "minOrderQty": step, "qtyStep": step,
                              "postOnlyMaxOrderQty": "1000000", "maxMktOrderQty": "100000",
                              "minNotionalValue": "5"},
            "unifiedMarginTrade": True,
            "fundingInterval": interval_min,
            "settleCoin": inst.settle,
            "copyTrading": "both",
            "upperFundingRate": cap,
            "lowerFundingRate": "-" + cap,
            "isPreListing": inst.status == PRELAUNCH,
            "preListingInfo": None,
            "displayName": "",
        }

    def instruments_info(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /v5/market/instruments-info``: ``limit`` (default 500, cap 1000) instruments from
        ``cursor`` on; ``nextPageCursor`` is ``""`` on the last page. Without ``status`` only
        trading instruments are listed, ``status=PreLaunch`` lists the pre-launch ones."""
        category = self._category(query)
        status = PRELAUNCH if query.get("status") == "PreLaunch" else TRADING
        positions = [
            position for position in self.order
            if self.category_of(self.market.instruments[position]) == category
            and self.market.instruments[position].status == status
            and query.get("symbol") in (None, self.ids[position])
        ]
        limit = page_limit(query, INSTRUMENTS_DEFAULT, INSTRUMENTS_CAP)
        offset = _offset(query["cursor"]) if query.get("cursor") else 0
        page = positions[offset:offset + limit]
        more = offset + limit < len(positions)
        return json_reply(envelope({
            "category": category,
            "list": [self._instrument_entry(p, self.market.instruments[p], now_ms) for p in page],
            "nextPageCursor": _cursor(offset + limit) if more else "",
        }, now_ms))

    def _ticker(self, inst: Instrument, market_id: str, now_ms: int) -> dict:
        q = self.market.quote(inst, now_ms)
        d, qd = inst.price_decimals, inst.qty_decimals
        funded = inst.interval_h is not None
        open_interest = q.base_volume * 0.4
        # inverse: volume and open interest in contracts of 1 USD, turnover in coin
        volume, turnover = (q.quote_volume, q.base_volume) if inst.inverse \
            else (q.base_volume, q.quote_volume)
        return {
            "symbol": market_id,
            "lastPrice": fixed(q.last, d),
            "indexPrice": fixed(q.index, d),
            "markPrice": fixed(q.mark, d),
            "prevPrice24h": fixed(q.open_24h, d),
            "price24hPcnt": fixed(q.last / q.open_24h - 1, 6),
            "highPrice24h": fixed(q.high_24h, d),
            "lowPrice24h": fixed(q.low_24h, d),
            "prevPrice1h": fixed(self.market.price(inst, now_ms - HOUR_MS), d),
            "openInterest": fixed(open_interest * q.mark, 0) if inst.inverse
            else fixed(open_interest, qd),
            "openInterestValue": fixed(open_interest if inst.inverse else open_interest * q.mark,
                                       8 if inst.inverse else 2),
            "turnover24h": fixed(turnover, 8 if inst.inverse else 4),
            "volume24h": fixed(volume, 0 if inst.inverse else qd),
            "fundingRate": trimmed(self.market.current_funding_rate(inst, now_ms))
            if funded else "",
            "nextFundingTime": str(self.market.next_funding_ms(inst, now_ms)) if funded else "",
            "predictedDeliveryPrice": "",
            "basisRate": "",
            "deliveryFeeRate": "" if funded else "0.0005",
            "deliveryTime": str(inst.expiry_ms or 0),
            "ask1Size": fixed(q.ask_size, qd),
            "bid1Price": fixed(q.bid, d),
            "ask1Price": fixed(q.ask, d),
            "bid1Size": fixed(q.bid_size, qd),
            "basis": "" if funded else fixed(q.last - q.index, d),
            "preOpenPrice": "",
            "preQty": "",
            "curPreListingPhase": "",
            "fundingIntervalHour": str(self.market.current_interval_h(inst, now_ms))
            if funded else "",
        }

    def tickers(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /v5/market/tickers``: one row per trading instrument of the category (or the
        ``symbol`` one); funding rate and next funding time are per row, the only time is the
        envelope's."""
        category = self._category(query)
        market_id = query.get("symbol")
        self.refuse_bulk(market_id, tickers=True)
        self.refuse_bulk(market_id, tickers=False)
        chosen = [(p, inst) for p, inst in self.selected(market_id)
                  if self.category_of(inst) == category]
        rows = [(p, self._ticker(inst, self.ids[p], now_ms)) for p, inst in chosen]
        return json_reply(envelope({"category": category, "list": self.tampered(rows)}, now_ms))

    def funding_history(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /v5/market/funding/history``: settlements in ``[startTime, endTime]`` newest first,
        the newest ``limit`` (default and cap 200) of them (as the venue's ``Quirks`` alter
        them). A symbol of another category is unknown."""
        category = self._category(query)
        position, inst = self.lookup(query.get("symbol"), funded=True)
        if self.category_of(inst) != category:
            raise VenueError("bad_symbol", self.ids[position])
        times = self.history_times(
            inst, int_param(query, "startTime"), int_param(query, "endTime"),
            page_limit(query, HISTORY_CAP, HISTORY_CAP), now_ms, start_anchored=False,
        )
        return json_reply(envelope({"category": category, "list": [
            {"symbol": self.ids[position],
             "fundingRate": trimmed(self.market.funding_rate(inst, t)),
             "fundingRateTimestamp": str(t)}
            for t in reversed(times)
        ]}, now_ms))

    @staticmethod
    def time(query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /v5/market/time``."""
        return json_reply(envelope(
            {"timeSecond": str(now_ms // 1000), "timeNano": str(now_ms * 1_000_000)}, now_ms
        ))
