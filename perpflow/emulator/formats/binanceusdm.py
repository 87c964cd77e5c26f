"""Binance USDⓈ-M futures (``fapi``) public market data, as ccxt's ``binanceusdm`` reads it.

Bare JSON (no envelope); numbers as strings with fixed decimals, times as integer ms; the
no-symbol forms are arrays, the ``?symbol=`` forms single objects. Errors are
``{"code": -1121, "msg": "Invalid symbol."}`` with HTTP 400; overload is a plain 503.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from perpflow.emulator.formats.base import GeneratedFormat, Handler
from perpflow.emulator.market import DAY_MS, FUTURE, Instrument, InstrumentSpec
from perpflow.emulator.wire import ErrorStyle, Reply, fixed, int_param, json_reply, page_limit

PERPETUAL_DELIVERY_MS = 4133404800000  # Binance's "never" delivery date for perpetuals
HISTORY_DEFAULT, HISTORY_CAP = 100, 1000
RATE_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 2400},
    {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
]
ORDER_TYPES = ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
               "TRAILING_STOP_MARKET"]

ERRORS = ErrorStyle(
    envelope=lambda code, message, now_ms: {"code": code, "msg": message},
    kinds={
        "bad_symbol": (400, -1121, "Invalid symbol."),
        "bad_param": (400, -1102, "Mandatory parameter '{}' was not sent, was empty/null, or "
                      "malformed."),
        "rate_limited": (429, -1003, "Too many requests; current limit of IP(127.0.0.1) is 2400 "
                         "requests per minute. Please use the websocket for live updates to "
                         "avoid polling the API."),
        "unavailable": (503, None, "Service Unavailable."),
        "not_found": (404, None, "Not Found"),
        "too_many_symbols": (400, -1130, "Data sent for parameter '{}' is not valid: the request "
                             "cannot contain more than 1 symbol."),
    },
)


def _rate(value: float) -> str:
    return fixed(value, 8)


class BinanceUsdmFormat(GeneratedFormat):
    """``/fapi/v1/...``: exchangeInfo, ticker/24hr, ticker/bookTicker, premiumIndex, fundingRate
    (ascending, page cap 1000, pages anchored at ``startTime``), fundingInfo (only the symbols
    whose interval is not 8h) and time.

    Quirks: every history quirk (``history_newest_first`` reverses the rows), ``no_bulk_funding``
    (premiumIndex without ``symbol``: -1102), ``single_symbol_tickers`` (ticker/24hr and
    bookTicker without ``symbol``: -1130), ``stale_instruments`` (ticker/24hr row as of the last
    trade, ``closeTime`` and premiumIndex ``time`` = last trade), intervals and changes
    (fundingInfo follows the interval in force). Not ``contract_size`` or ``inverse``.
    """

    ccxt_id = "binanceusdm"
    extras = (
        InstrumentSpec("BTC", "USDT", "USDT", FUTURE),
        InstrumentSpec("ETH", "USDT", "USDT", FUTURE),
        InstrumentSpec("BTC", "USDC", "USDC"),
    )
    funding_cap = 0.03
    errors = ERRORS
    symbol_field = "symbol"
    last_field = "lastPrice"
    history_path = "/fapi/v1/fundingRate"
    unsupported = {
        "contract_size": "USDⓈ-M contracts are one unit of the base currency and ticker volume "
                         "is in base currency",
        "inverse": "coin-margined contracts are Binance COIN-M (/dapi, ccxt binancecoinm), not "
                   "USDⓈ-M",
    }

    @staticmethod
    def market_id(inst: Instrument) -> str:
        """``BTCUSDT`` for perpetuals, ``BTCUSDT_260327`` for quarterly futures."""
        if inst.expiry_ms is None:
            return inst.base + inst.quote
        expiry = datetime.fromtimestamp(inst.expiry_ms / 1000, UTC)
        return f"{inst.base}{inst.quote}_{expiry:%y%m%d}"

    def routes(self) -> dict[str, Handler]:
        return {
            "/fapi/v1/exchangeInfo": self.exchange_info,
            "/fapi/v1/ticker/24hr": self.ticker_24hr,
            "/fapi/v1/ticker/bookTicker": self.book_ticker,
            "/fapi/v1/premiumIndex": self.premium_index,
            "/fapi/v1/fundingRate": self.funding_rate_history,
            "/fapi/v1/fundingInfo": self.funding_info,
            "/fapi/v1/time": self.time,
        }

    def _symbol_entry(self, position: int, inst: Instrument) -> dict:
        tick = fixed(10**-inst.price_decimals, inst.price_decimals)
        step = fixed(10**-inst.qty_decimals, inst.qty_decimals)
        return {
            "symbol": self.ids[position],
            "pair": inst.base + inst.quote,
            "contractType": "PERPETUAL" if inst.expiry_ms is None else "CURRENT_QUARTER",
            "deliveryDate": inst.expiry_ms or PERPETUAL_DELIVERY_MS,
            "onboardDate": inst.listed_ms,
            "status": "TRADING",
            "maintMarginPercent": "2.5000",
            "requiredMarginPercent": "5.0000",
            "baseAsset": inst.base,
            "quoteAsset": inst.quote,
            "marginAsset": inst.settle,
            "pricePrecision": inst.price_decimals,
            "quantityPrecision": inst.qty_decimals,
            "baseAssetPrecision": 8,
            "quotePrecision": 8,
            "underlyingType": "COIN",
            "underlyingSubType": [],
            "triggerProtect": "0.0500",
            "liquidationFee": "0.012500",
            "marketTakeBound": "0.05",
            "maxMoveOrderLimit": 10000,
            "filters": [
                {"minPrice": tick, "maxPrice": fixed(inst.ref_price * 20, inst.price_decimals),
                 "filterType": "PRICE_FILTER", "tickSize": tick},
                {"stepSize": step, "filterType": "LOT_SIZE", "maxQty": "1000000", "minQty": step},
                {"stepSize": step, "filterType": "MARKET_LOT_SIZE", "maxQty": "100000",
                 "minQty": step},
                {"limit": 200, "filterType": "MAX_NUM_ORDERS"},
                {"limit": 10, "filterType": "MAX_NUM_ALGO_ORDERS"},
                {"notional": "5", "filterType": "MIN_NOTIONAL"},
                {"multiplierDown": "0.9500", "multiplierUp": "1.0500", "multiplierDecimal": "4",
                 "filterType": "PERCENT_PRICE"},
            ],
            "orderTypes": ORDER_TYPES,
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
        }

    def exchange_info(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /fapi/v1/exchangeInfo``: every instrument (perpetuals, quarterlies, USDC)."""
        assets = sorted({inst.settle for inst in self.market.instruments})
        return json_reply({
            "timezone": "UTC",
            "serverTime": now_ms,
            "futuresType": "U_MARGINED",
            "rateLimits": RATE_LIMITS,
            "exchangeFilters": [],
            "assets": [{"asset": asset, "marginAvailable": True, "autoAssetExchange": "-10000"}
                       for asset in assets],
            "symbols": [self._symbol_entry(position, inst)
                        for position, inst in enumerate(self.market.instruments)],
        })

    @staticmethod
    def _one_or_all(query: Mapping[str, str], rows: list[dict]) -> Reply:
        """Binance answers ``?symbol=`` with the bare object, the no-symbol form with an array."""
        return json_reply(rows[0] if query.get("symbol") and rows else rows)

    def ticker_24hr(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /fapi/v1/ticker/24hr``: rolling 24h statistics up to the last trade
        (``closeTime``); no bid/ask (see bookTicker)."""
        self.refuse_bulk(query.get("symbol"), tickers=True)
        rows = []
        for position, inst in self.selected(query.get("symbol")):
            traded_ms = self.venue_time(position, inst, now_ms)
            q = self.market.quote(inst, traded_ms)
            d, qd = inst.price_decimals, inst.qty_decimals
            count = int(q.quote_volume / 2_000) + 1
            last_id = traded_ms // 50 + position
            rows.append((position, {
                "symbol": self.ids[position],
                "priceChange": fixed(q.last - q.open_24h, d),
                "priceChangePercent": fixed((q.last / q.open_24h - 1) * 100, 3),
                "weightedAvgPrice": fixed(q.quote_volume / q.base_volume, d),
                "lastPrice": fixed(q.last, d),
                "lastQty": fixed(q.bid_size / 10, qd),
                "openPrice": fixed(q.open_24h, d),
                "highPrice": fixed(q.high_24h, d),
                "lowPrice": fixed(q.low_24h, d),
                "volume": fixed(q.base_volume, qd),
                "quoteVolume": fixed(q.quote_volume, 2),
                "openTime": traded_ms - DAY_MS,
                "closeTime": traded_ms,
                "firstId": last_id - count + 1,
                "lastId": last_id,
                "count": count,
            }))
        return self._one_or_all(query, self.tampered(rows))

    def book_ticker(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /fapi/v1/ticker/bookTicker``: best bid/ask with sizes and a ``time``."""
        self.refuse_bulk(query.get("symbol"), tickers=True)
        rows = []
        for position, inst in self.selected(query.get("symbol")):
            q = self.market.quote(inst, now_ms)
            d, qd = inst.price_decimals, inst.qty_decimals
            rows.append({
                "symbol": self.ids[position],
                "bidPrice": fixed(q.bid, d),
                "bidQty": fixed(q.bid_size, qd),
                "askPrice": fixed(q.ask, d),
                "askQty": fixed(q.ask_size, qd),
                "time": now_ms,
                "lastUpdateId": now_ms * 10 + position,
            })
        return self._one_or_all(query, rows)

    def premium_index(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /fapi/v1/premiumIndex``: mark/index price and the current funding rate with the
        next funding time; quarterlies carry empty rates and ``nextFundingTime`` 0."""
        self.refuse_bulk(query.get("symbol"), tickers=False)
        rows = []
        for position, inst in self.selected(query.get("symbol")):
            q = self.market.quote(inst, now_ms)
            funded = inst.interval_h is not None
            rows.append({
                "symbol": self.ids[position],
                "markPrice": fixed(q.mark, 8),
                "indexPrice": fixed(q.index, 8),
                "estimatedSettlePrice": fixed(q.index, 8),
                "lastFundingRate": _rate(self.market.current_funding_rate(inst, now_ms))
                if funded else "",
                "interestRate": "0.00010000" if funded else "",
                "nextFundingTime": self.market.next_funding_ms(inst, now_ms) if funded else 0,
                "time": self.venue_time(position, inst, now_ms),
            })
        return self._one_or_all(query, rows)

    def funding_info(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /fapi/v1/fundingInfo``: like the real venue, only symbols with an adjusted
        funding setup are listed, here those whose interval now in force is not 8h."""
        cap = _rate(self.funding_cap)
        rows = []
        for position, inst in enumerate(self.market.instruments):
            if inst.interval_h is None:
                continue
            hours = self.market.current_interval_h(inst, now_ms)
            if hours != 8:
                rows.append({"symbol": self.ids[position], "adjustedFundingRateCap": cap,
                             "adjustedFundingRateFloor": "-" + cap, "fundingIntervalHours": hours,
                             "disclaimer": False})
        return json_reply(rows)

    def funding_rate_history(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /fapi/v1/fundingRate``: settlements in ``[startTime, endTime]`` ascending, at most
        ``limit`` (default 100, cap 1000) counted from ``startTime`` when given, else the latest
        ones; without ``symbol``, the same window merged over every perpetual (both as the
        venue's ``Quirks`` alter them)."""
        start, end = int_param(query, "startTime"), int_param(query, "endTime")
        limit = page_limit(query, HISTORY_DEFAULT, HISTORY_CAP)
        market_id = query.get("symbol")
        if market_id:
            chosen = [self.lookup(market_id, funded=True)]
        else:
            chosen = [(p, i) for p, i in self.selected(None) if i.interval_h is not None]
        rows = []
        for position, inst in chosen:
            for t in self.history_times(inst, start, end, limit, now_ms, start_anchored=True):
                rows.append((t, position, inst))
        rows.sort(key=lambda row: (row[0], row[1]))
        if len(chosen) > 1:
            page = min(limit, self.quirks.history_page_cap or limit)
            from_start = start is not None and not self.quirks.history_ignores_since
            rows = rows[:page] if from_start else rows[-page:]
        if self.quirks.history_newest_first:
            rows.reverse()
        return json_reply([
            {"symbol": self.ids[position], "fundingTime": t,
             "fundingRate": _rate(self.market.funding_rate(inst, t)),
             "markPrice": fixed(self.market.price(inst, t), 8)}
            for t, position, inst in rows
        ])

    @staticmethod
    def time(query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /fapi/v1/time``."""
        return json_reply({"serverTime": now_ms})
