"""Phemex public contract data, as ccxt's ``phemex`` (4.5.90) reads it.

Two generations side by side: USDT-margined perpetuals (``BTCUSDT``, type ``PerpetualV2``) print
real values as strings (``...Rp`` prices, ``...Rr`` rates, ``...Rq``/``...Rv`` quantities), the
coin-margined inverse ``BTCUSD`` (type ``Perpetual``, contracts of 1 USD) prints scaled integers
(``...Ep`` = price x 10^priceScale, ``...Er`` = rate x 10^ratioScale, ``...Ev`` = value x
10^valueScale). Market-data bodies are ``{"error": null, "id": 0, "result": ...}``, the product
lists and the funding history ``{"code": 0, "msg": "OK", "data": ...}``; errors are
``{"code": 39997, "msg": "Symbol not listed ...", "data": null}`` (unknown symbol, ccxt:
BadSymbol), ``6001`` (bad argument), ``39995`` (rate limit). There is no all-symbol funding
call: each symbol's current rate is in its 24h ticker.
"""

from __future__ import annotations

from collections.abc import Mapping

from perpflow.emulator.formats.base import GeneratedFormat, Handler
from perpflow.emulator.market import Instrument, InstrumentSpec
from perpflow.emulator.wire import (
    ErrorStyle, Reply, VenueError, history_window, int_param, json_reply, page_limit, trimmed,
)

HISTORY_CAP = 100
PRICE_SCALE = 4  # inverse contracts: prices x 10^4
RATIO_SCALE = VALUE_SCALE = 8  # rates and coin values x 10^8


def data_envelope(data: object, code: int = 0, message: str = "OK") -> dict:
    """The envelope of the product lists, the funding history and every error."""
    return {"code": code, "msg": message, "data": data}


def result_envelope(result: object) -> dict:
    """The envelope of the market-data (``md``) endpoints."""
    return {"error": None, "id": 0, "result": result}


ERRORS = ErrorStyle(
    envelope=lambda code, message, now_ms: data_envelope(None, code, message),
    kinds={
        "bad_symbol": (200, 39997, "Symbol not listed {}"),
        "bad_param": (200, 6001, "invalid argument: {}"),
        "rate_limited": (429, 39995, "Too many requests."),
        "unavailable": (503, None, "Service Unavailable"),
        "not_found": (404, None, "Not Found"),
    },
)


def scaled(value: float, scale: int) -> int:
    """``value`` x 10^scale as Phemex's integer fields carry it."""
    return round(value * 10**scale)



def funding_symbol(inst: Instrument) -> str:
    """Phemex's funding-rate symbol of ``inst``: ``.BTCUSDTFR8H`` for a USDT perpetual,
    ``.BTCFR8H`` for the inverse ``BTCUSD`` (as in its product list's ``fundingRate8hSymbol``)."""
    return f".{inst.base}FR8H" if inst.inverse else f".{PhemexFormat.market_id(inst)}FR8H"


class PhemexFormat(GeneratedFormat):
    """``/public/products`` (v2 list: ``perpProductsV2`` for USDT perpetuals, ``products`` for
    the inverse one), ``/v1/exchange/public/products`` (the contract details ccxt merges in),
    ``/md/v2/ticker/24hr[/all]`` (USDT perpetuals: prices and the current and predicted funding
    rate, no best bid/ask), ``/v1/md/ticker/24hr[/all]`` (inverse, scaled integers with bid/ask),
    ``/api-data/public/data/funding-rate-history`` and its ``/v1`` twin (symbol
    ``.<id>FR8H`` whatever the interval, ``.<base>FR8H`` for inverse contracts,
    ``start``/``end`` inclusive, newest first, ``limit`` default and cap 100, anchored at
    ``end``)."""

    ccxt_id = "phemex"
    extras = (InstrumentSpec("BTC", "USD", "BTC"),)
    funding_cap = 0.01
    errors = ERRORS
    symbol_field = "symbol"
    last_field = "closeRp"

    @staticmethod
    def market_id(inst: Instrument) -> str:
        """``BTCUSDT`` (USDT perpetual), ``BTCUSD`` (inverse)."""
        return inst.base + inst.quote

    def routes(self) -> dict[str, Handler]:
        return {
            "/public/products": self.products,
            "/v1/exchange/public/products": self.products_v1,
            "/md/v2/ticker/24hr": self.ticker_v2,
            "/md/v2/ticker/24hr/all": self.ticker_v2,
            "/v1/md/ticker/24hr": self.ticker_v1,
            "/v1/md/ticker/24hr/all": self.ticker_v1,
            "/api-data/public/data/funding-rate-history": self.funding_history,
            "/v1/api-data/public/data/funding-rate-history": self.funding_history,
        }

    def _common(self, position: int, inst: Instrument) -> dict:
        market_id = self.ids[position]
        return {
            "symbol": market_id, "code": 40_000 + position, "displaySymbol":
            f"{inst.base} / {inst.quote}", "indexSymbol": f".{market_id}",
            "markSymbol": f".M{market_id}", "fundingRateSymbol": f".{market_id}FR",
            "fundingRate8hSymbol": funding_symbol(inst), "settleCurrency": inst.settle,
            "quoteCurrency": inst.quote, "tickSize": trimmed(10**-inst.price_decimals),
            "status": "Listed", "listTime": inst.listed_ms, "majorSymbol": inst.base == "BTC",
            "defaultLeverage": "-10", "fundingInterval": inst.interval_h * 3600,
            "maxLeverage": 100,
        }

    def _product_v2(self, position: int, inst: Instrument) -> dict:
        step = trimmed(10**-inst.qty_decimals)
        return {
            **self._common(position, inst), "type": "PerpetualV2",
            "contractUnderlyingAssets": inst.base, "baseCurrency": inst.base,
            "priceScale": 0, "ratioScale": 0, "pricePrecision": inst.price_decimals,
            "maxOrderQtyRq": "1000000", "maxPriceRp": trimmed(inst.ref_price * 20),
            "minOrderValueRv": "1", "minPriceRp": trimmed(10**-inst.price_decimals),
            "qtyPrecision": inst.qty_decimals, "qtyStepSize": step, "tipOrderQtyRq": "200",
            "maxOpenPosLeverage": 100.0,
        }

    def _product_inverse(self, position: int, inst: Instrument) -> dict:
        return {
            **self._common(position, inst), "type": "Perpetual",
            "contractUnderlyingAssets": "USD", "contractSize": 1.0, "lotSize": 1,
            "priceScale": PRICE_SCALE, "ratioScale": RATIO_SCALE,
            "pricePrecision": inst.price_decimals,
            "minPriceEp": scaled(10**-inst.price_decimals, PRICE_SCALE),
            "maxPriceEp": scaled(inst.ref_price * 20, PRICE_SCALE), "maxOrderQty": 1000000,
        }

    def products(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /public/products``: currencies, inverse ``products``, ``perpProductsV2``."""
        chosen = self.selected(None)
        return json_reply(data_envelope({
            "currencies": [
                {"currency": code, "name": code, "code": n + 1, "valueScale": VALUE_SCALE,
                 "minValueEv": 1, "maxValueEv": 5_000_000_000_000_000_000, "needAddrTag": 0,
                 "status": "Listed", "displayCurrency": code, "inAssetsDisplay": 1,
                 "perpetual": 1, "stableCoin": 0}
                for n, code in enumerate(sorted({inst.settle for _, inst in chosen}))
            ],
            "products": [self._product_inverse(p, inst) for p, inst in chosen if inst.inverse],
            "perpProductsV2": [self._product_v2(p, inst) for p, inst in chosen
                               if not inst.inverse],
            "riskLimits": [], "riskLimitsV2": [], "leverages": [], "ratioScale": RATIO_SCALE,
            "md5Checksum": "0" * 32,
        }))

    def products_v1(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /v1/exchange/public/products``: the inverse contracts' details."""
        return json_reply(data_envelope([
            {"symbol": self.ids[p], "underlyingSymbol": f".{inst.base}",
             "quoteCurrency": inst.quote, "baseCurrency": inst.base,
             "settlementCurrency": inst.settle, "maxOrderQty": 1000000,
             "maxPriceEp": scaled(inst.ref_price * 20, PRICE_SCALE), "lotSize": 1,
             "tickSize": trimmed(10**-inst.price_decimals), "contractSize": "1 USD",
             "priceScale": PRICE_SCALE, "ratioScale": RATIO_SCALE, "valueScale": VALUE_SCALE,
             "defaultLeverage": 0, "maxLeverage": 100, "initMarginEr": "1000000",
             "maintMarginEr": "500000", "defaultRiskLimitEv": 10_000_000_000,
             "deleverage": True, "makerFeeRateEr": -250000, "takerFeeRateEr": 750000,
             "fundingInterval": inst.interval_h, "type": "Perpetual"}
            for p, inst in self.selected(None) if inst.inverse
        ]))

    def _rates(self, inst: Instrument, now_ms: int) -> tuple[float, float]:
        """The rate of the coming settlement and the one predicted for the settlement after."""
        upcoming = self.market.next_funding_ms(inst, now_ms)
        return (self.market.funding_rate(inst, upcoming),
                self.market.funding_rate(inst, upcoming + inst.interval_ms))

    def _chosen(self, query: Mapping[str, str], inverse: bool) -> list[tuple[int, Instrument]]:
        market_id = query.get("symbol")
        chosen = self.selected(market_id)
        if market_id and chosen[0][1].inverse != inverse:
            raise VenueError("bad_symbol", market_id)
        return [(p, inst) for p, inst in chosen if inst.inverse == inverse]

    def _one_or_all(self, query: Mapping[str, str], rows: list[dict]) -> Reply:
        return json_reply(result_envelope(rows[0] if query.get("symbol") and rows else rows))

    def ticker_v2(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /md/v2/ticker/24hr?symbol=`` (one object) and ``/all`` (a list): USDT
        perpetuals, real values, ``timestamp`` in nanoseconds."""
        rows = []
        for position, inst in self._chosen(query, inverse=False):
            q = self.market.quote(inst, now_ms)
            d = inst.price_decimals
            rate, predicted = self._rates(inst, now_ms)
            rows.append((position, {
                "closeRp": trimmed(q.last, d), "fundingRateRr": trimmed(rate),
                "highRp": trimmed(q.high_24h, d), "indexPriceRp": trimmed(q.index, 8),
                "lowRp": trimmed(q.low_24h, d), "markPriceRp": trimmed(q.mark, 8),
                "openInterestRv": trimmed(q.base_volume * 0.4, inst.qty_decimals),
                "openRp": trimmed(q.open_24h, d), "predFundingRateRr": trimmed(predicted),
                "symbol": self.ids[position], "timestamp": str(now_ms * 1_000_000),
                "turnoverRv": trimmed(q.quote_volume, 4),
                "volumeRq": trimmed(q.base_volume, inst.qty_decimals),
            }))
        return self._one_or_all(query, self.tampered(rows))

    def ticker_v1(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /v1/md/ticker/24hr?symbol=`` (one object) and ``/all`` (a list): the inverse
        contract, scaled integers (``volume`` in contracts of 1 USD, ``turnoverEv`` in coin)."""
        rows = []
        for position, inst in self._chosen(query, inverse=True):
            q = self.market.quote(inst, now_ms)
            rate, predicted = self._rates(inst, now_ms)
            rows.append({
                "askEp": scaled(q.ask, PRICE_SCALE), "bidEp": scaled(q.bid, PRICE_SCALE),
                "fundingRateEr": scaled(rate, RATIO_SCALE),
                "highEp": scaled(q.high_24h, PRICE_SCALE),
                "indexEp": scaled(q.index, PRICE_SCALE), "lastEp": scaled(q.last, PRICE_SCALE),
                "lowEp": scaled(q.low_24h, PRICE_SCALE), "markEp": scaled(q.mark, PRICE_SCALE),
                "openEp": scaled(q.open_24h, PRICE_SCALE),
                "openInterest": round(q.quote_volume * 0.4),
                "predFundingRateEr": scaled(predicted, RATIO_SCALE),
                "symbol": self.ids[position], "timestamp": now_ms * 1_000_000,
                "turnoverEv": scaled(q.base_volume, VALUE_SCALE),
                "volume": round(q.quote_volume),
            })
        return self._one_or_all(query, rows)

    def funding_history(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET [/v1]/api-data/public/data/funding-rate-history?symbol=.<id>FR8H``: settlements
        in ``[start, end]`` newest first, the newest ``limit`` (default and cap 100)."""
        wanted = query.get("symbol") or ""
        by_funding_symbol = {funding_symbol(i): self.ids[p]
                             for p, i in enumerate(self.market.instruments)}
        try:
            _, inst = self.lookup(by_funding_symbol.get(wanted), funded=True)
        except VenueError:
            raise VenueError("bad_symbol", wanted) from None
        rows = history_window(
            self.market.first_settlement_ms(inst), inst.interval_ms, now_ms,
            int_param(query, "start"), int_param(query, "end"),
            page_limit(query, HISTORY_CAP, HISTORY_CAP), oldest_first=False,
        )
        return json_reply(data_envelope({"rows": [
            {"symbol": wanted, "fundingRate": trimmed(self.market.funding_rate(inst, t)),
             "fundingTime": str(t), "intervalSeconds": str(inst.interval_h * 3600)}
            for t in reversed(rows)
        ]}))
