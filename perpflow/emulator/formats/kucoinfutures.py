"""KuCoin Futures public market data, as ccxt's ``kucoinfutures`` (4.5.90) reads it.

Every body is ``{"code": "200000", "data": ...}``; the futures endpoints print numbers as JSON
numbers (prices of tickers as strings, ticker times in nanoseconds), the unified-account (UTA)
funding list prints rates as strings. Contracts count in lots of ``multiplier`` base currency
(linear) or of 1 USD (inverse: ``multiplier`` -1); BTC is ``XBT`` in ids. Errors keep the
envelope with another ``code`` (``400000`` unknown contract, ``400100`` bad parameter,
``429000`` rate limit); overload is a plain 503.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import ClassVar

from perpflow.emulator.formats.base import GeneratedFormat, Handler
from perpflow.emulator.market import Instrument, InstrumentSpec
from perpflow.emulator.wire import (
    ErrorStyle, Reply, VenueError, history_window, int_param, json_reply, trimmed,
)

OK = "200000"
HISTORY_CAP = 100
CURRENT_FUNDING = re.compile(r"/api/v1/funding-rate/([^/]+)/current")
CURRENT_FUNDING_ROUTE = "/api/v1/funding-rate/{symbol}/current"


def envelope(data: object, code: str = OK, message: str | None = None) -> dict:
    """KuCoin's response envelope around ``data`` (an error carries ``msg`` instead)."""
    return {"code": code, "data": data} if message is None else {"code": code, "msg": message}


ERRORS = ErrorStyle(
    envelope=lambda code, message, now_ms: envelope(None, str(code), message),
    kinds={
        "bad_symbol": (400, 400000, "Contract does not exist: {}"),
        "bad_param": (400, 400100, "Parameter {} is invalid"),
        "rate_limited": (429, 429000, "Too many requests. System-level rate limit exceeded."),
        "unavailable": (503, None, "Service Unavailable"),
        "not_found": (404, 404, "Not Found"),
    },
)


def coin_id(currency: str) -> str:
    """KuCoin's code of a currency (``XBT`` for BTC)."""
    return "XBT" if currency == "BTC" else currency


def multiplier(inst: Instrument) -> float:
    """Contract size: -1 (one USD, inverse), else the power of ten of base currency that makes one
    contract worth 10 to 100 quote units (0.001 XBT, 0.01 ETH)."""
    if inst.inverse:
        return -1
    return 10.0 ** math.floor(math.log10(100 / inst.ref_price))


def granularity_tag(inst: Instrument) -> str:
    """``8H``, ``4H``, ``1H``: the funding symbols' suffix."""
    return f"{inst.interval_h}H"


class KucoinFuturesFormat(GeneratedFormat):
    """``/api/v1/...``: contracts/active (every contract with its market and funding: ccxt's
    markets and default tickers), ticker (one), allTickers (best bid/ask, ccxt's
    ``fetch_bids_asks``), funding-rate/{symbol}/current (one current rate),
    contract/funding-rates (``from``/``to`` inclusive, newest first, the newest 100), timestamp;
    ``/api/ua/v2/market/funding-rate`` (every current rate, funding-index rows included: ccxt's
    ``fetch_funding_rates``)."""

    ccxt_id = "kucoinfutures"
    extras = (
        InstrumentSpec("BTC", "USD", "BTC"),
        InstrumentSpec("ETH", "USD", "ETH"),
        InstrumentSpec("BTC", "USDC", "USDC"),
    )
    funding_cap = 0.003
    errors = ERRORS
    symbol_field = "symbol"
    last_field = "lastTradePrice"
    # ccxt asks the spot API for currencies first; the contracts endpoint is all it needs
    ccxt_config: ClassVar[Mapping] = {"has": {"fetchCurrencies": False}}

    @staticmethod
    def market_id(inst: Instrument) -> str:
        """``XBTUSDTM``, ``XBTUSDCM`` (USDC), ``XBTUSDM`` (inverse)."""
        return f"{coin_id(inst.base)}{inst.quote}M"

    def routes(self) -> dict[str, Handler]:
        return {
            "/api/v1/contracts/active": self.contracts_active,
            "/api/v1/ticker": self.ticker,
            "/api/v1/allTickers": self.all_tickers,
            CURRENT_FUNDING_ROUTE: self.current_funding,
            "/api/v1/contract/funding-rates": self.funding_history,
            "/api/ua/v2/market/funding-rate": self.funding_rates,
            "/api/v1/timestamp": self.time,
        }

    def handle(
        self, method: str, path: str, query: Mapping[str, str], now_ms: int,
        body: bytes | None = None,
    ) -> Reply:
        """As the base, with the symbol taken from the path of ``funding-rate/{symbol}/current``."""
        match = CURRENT_FUNDING.fullmatch(path)
        if match:
            path, query = CURRENT_FUNDING_ROUTE, {**query, "symbol": match[1]}
        return super().handle(method, path, query, now_ms, body)

    def _funding_symbol(self, inst: Instrument, position: int) -> str:
        return f".{self.ids[position]}FPI{granularity_tag(inst)}"

    def _contract(self, position: int, inst: Instrument, now_ms: int) -> dict:
        q = self.market.quote(inst, now_ms)
        d = inst.price_decimals
        settle, interval = coin_id(inst.settle), inst.interval_ms
        upcoming = self.market.next_funding_ms(inst, now_ms)
        tag = granularity_tag(inst)
        quote_id = inst.quote
        return {
            "symbol": self.ids[position], "rootSymbol": settle, "type": "FFWCSX",
            "firstOpenDate": inst.listed_ms, "expireDate": None, "settleDate": None,
            "baseCurrency": coin_id(inst.base), "quoteCurrency": inst.quote,
            "settleCurrency": settle, "maxOrderQty": 1000000, "maxPrice": 1000000,
            "lotSize": 1, "tickSize": 10**-d, "indexPriceTickSize": 10**-d,
            "multiplier": multiplier(inst), "initialMargin": 0.008, "maintainMargin": 0.004,
            "maxRiskLimit": 25000, "minRiskLimit": 25000, "riskStep": 12500,
            "makerFeeRate": 0.0002, "takerFeeRate": 0.0006, "takerFixFee": 0, "makerFixFee": 0,
            "settlementFee": None, "isDeleverage": True, "isQuanto": False,
            "isInverse": inst.inverse, "markMethod": "FairPrice", "fairMethod": "FundingRate",
            "fundingBaseSymbol": f".{coin_id(inst.base)}INT{tag}",
            "fundingQuoteSymbol": f".{quote_id}INT{tag}",
            "fundingRateSymbol": self._funding_symbol(inst, position),
            "indexSymbol": f".K{coin_id(inst.base)}{quote_id}", "settlementSymbol": "",
            "status": "Open",
            "fundingFeeRate": self.market.funding_rate(inst, upcoming),
            "predictedFundingFeeRate": self.market.funding_rate(inst, upcoming + interval),
            "fundingRateGranularity": interval,
            "openInterest": trimmed(q.base_volume * 0.4 / self._contract_base(inst, q.last), 0),
            "turnoverOf24h": round(q.base_volume if inst.inverse else q.quote_volume, 8),
            "volumeOf24h": round(q.quote_volume if inst.inverse else q.base_volume, 8),
            "markPrice": round(q.mark, d), "indexPrice": round(q.index, d),
            "lastTradePrice": round(q.last, d), "nextFundingRateTime": upcoming - now_ms,
            "maxLeverage": 125, "sourceExchanges": ["binance", "okex", "bybit"],
            "premiumsSymbol1M": f".{self.ids[position]}PI",
            "premiumsSymbol8H": f".{self.ids[position]}PI8H",
            "fundingBaseSymbol1M": f".{coin_id(inst.base)}INT",
            "fundingQuoteSymbol1M": f".{quote_id}INT",
            "lowPrice": round(q.low_24h, d), "highPrice": round(q.high_24h, d),
            "priceChgPct": round(q.last / q.open_24h - 1, 4),
            "priceChg": round(q.last - q.open_24h, d),
        }

    def tampered(self, rows: Iterable[tuple[int, dict]]) -> list[dict]:
        """As the base, for a last price that is a JSON number: altered as text, served as a
        number again unless it became non-numeric."""
        field = self.last_field
        served = super().tampered((p, {**row, field: repr(row[field])}) for p, row in rows)
        for row in served:
            if field in row:
                try:
                    row[field] = float(row[field])
                except ValueError:
                    pass  # "n/a": a non-numeric price, served as text
        return served

    @staticmethod
    def _contract_base(inst: Instrument, price: float) -> float:
        """One contract in base currency at ``price``."""
        return 1 / price if inst.inverse else multiplier(inst)

    def contracts_active(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /api/v1/contracts/active``: every open contract with its market and funding
        (``nextFundingRateTime`` is ms until the next settlement; ``fundingFeeRate`` the rate
        of that settlement, ``predictedFundingFeeRate`` the one predicted for the next)."""
        rows = [(p, self._contract(p, inst, now_ms)) for p, inst in self.selected(None)]
        return json_reply(envelope(self.tampered(rows)))

    def _book_ticker(self, position: int, inst: Instrument, now_ms: int) -> dict:
        q = self.market.quote(inst, now_ms)
        d = inst.price_decimals
        return {
            "sequence": now_ms * 10 + position, "symbol": self.ids[position], "side": "buy",
            "size": max(1, round(q.bid_size / 10 / self._contract_base(inst, q.last))),
            "tradeId": str(now_ms // 10 + position), "price": trimmed(q.last, d),
            "bestBidPrice": trimmed(q.bid, d),
            "bestBidSize": max(1, round(q.bid_size / self._contract_base(inst, q.last))),
            "bestAskPrice": trimmed(q.ask, d),
            "bestAskSize": max(1, round(q.ask_size / self._contract_base(inst, q.last))),
            "ts": now_ms * 1_000_000,
        }

    def ticker(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /api/v1/ticker?symbol=``: last trade and best bid/ask (sizes in contracts),
        ``ts`` in nanoseconds."""
        position, inst = self.lookup(query.get("symbol"))
        return json_reply(envelope(self._book_ticker(position, inst, now_ms)))

    def all_tickers(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /api/v1/allTickers``: the ``ticker`` row of every open contract."""
        return json_reply(envelope([self._book_ticker(p, inst, now_ms)
                                    for p, inst in self.selected(None)]))

    def _current(self, inst: Instrument, now_ms: int) -> tuple[int, float]:
        upcoming = self.market.next_funding_ms(inst, now_ms)
        return upcoming, self.market.funding_rate(inst, upcoming)

    def current_funding(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /api/v1/funding-rate/{symbol}/current``: ``value`` is the rate of the settlement
        at ``fundingTime``, ``predictedValue`` the one after, ``timePoint`` the previous
        settlement (keyed by the funding symbol ``.XBTUSDTMFPI8H``)."""
        position, inst = self.lookup(query.get("symbol"), funded=True)
        upcoming, rate = self._current(inst, now_ms)
        return json_reply(envelope({
            "symbol": self._funding_symbol(inst, position), "granularity": inst.interval_ms,
            "timePoint": upcoming - inst.interval_ms, "value": rate,
            "predictedValue": self.market.funding_rate(inst, upcoming + inst.interval_ms),
            "dailyInterestRate": 0.0003, "fundingRateCap": self.funding_cap,
            "fundingRateFloor": -self.funding_cap, "period": 0 if inst.interval_h == 8 else 1,
            "fundingTime": upcoming,
        }))

    def funding_rates(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /api/ua/v2/market/funding-rate``: every contract's upcoming rate
        (``nextFundingRate`` at ``fundingTime``) followed by the same row keyed by its funding
        index symbol; ``newGranularityStartTime`` is when the current interval took effect (in
        the past unless a change is scheduled)."""
        contracts, indexes = [], []
        for position, inst in self.selected(None):
            upcoming, rate = self._current(inst, now_ms)
            row = {
                "symbol": self.ids[position], "nextFundingRate": trimmed(rate),
                "fundingTime": upcoming, "fundingRateCap": trimmed(self.funding_cap),
                "fundingRateFloor": trimmed(-self.funding_cap),
                "currentGranularity": inst.interval_ms, "newGranularity": inst.interval_ms,
                "newGranularityStartTime": self.market.first_settlement_ms(inst),
            }
            contracts.append(row)
            indexes.append({**row, "symbol": self._funding_symbol(inst, position)})
        return json_reply(envelope(contracts + indexes))

    def funding_history(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /api/v1/contract/funding-rates?symbol=&from=&to=`` (both required, inclusive):
        settlements newest first, the newest 100 of the window."""
        position, inst = self.lookup(query.get("symbol"), funded=True)
        start, end = int_param(query, "from"), int_param(query, "to")
        if start is None or end is None:
            raise VenueError("bad_param", "from/to")
        rows = history_window(self.market.first_settlement_ms(inst), inst.interval_ms, now_ms,
                              start, end, HISTORY_CAP, oldest_first=False)
        return json_reply(envelope([
            {"symbol": self.ids[position], "fundingRate": self.market.funding_rate(inst, t),
             "timepoint": t}
            for t in reversed(rows)
        ]))

    @staticmethod
    def time(query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /api/v1/timestamp``."""
        return json_reply(envelope(now_ms))
