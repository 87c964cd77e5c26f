"""OKX v5 public data for perpetual swaps (``instType=SWAP``), as ccxt's ``okx`` reads it.

Every body is ``{"code": "0", "msg": "", "data": [...]}`` with all numbers and times as strings
(prices without trailing zeros); errors carry a non-zero string ``code`` (``51001`` unknown
instrument, ``50011`` rate limit, ``50001`` service unavailable).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from perpflow.emulator.formats.base import GeneratedFormat, Handler
from perpflow.emulator.market import DAY_MS, HOUR_MS, Instrument, InstrumentSpec, floor_to
from perpflow.emulator.wire import (
    ErrorStyle, Reply, VenueError, int_param, json_reply, page_limit, trimmed,
)

HISTORY_CAP = 100


def envelope(data: list, code: int = 0, message: str = "") -> dict:
    """OKX's response envelope around ``data``."""
    return {"code": str(code), "msg": message, "data": data}


ERRORS = ErrorStyle(
    envelope=lambda code, message, now_ms: envelope([], code, message),
    kinds={
        "bad_symbol": (200, 51001, "Instrument ID, Instrument ID code, or Spread ID doesn't "
                       "exist."),
        "bad_param": (400, 51000, "Parameter {} error"),
        "rate_limited": (429, 50011, "Too Many Requests"),
        "unavailable": (503, 50001, "Service temporarily unavailable. Please try again later."),
        "not_found": (404, 404, "Not Found: {}"),
        "too_many_symbols": (400, 51000, "Parameter {} error: the request cannot contain more "
                             "than 1 symbol"),
    },
)


def contract_value(inst: Instrument, linear_size: float | None = None) -> float:
    """Contract size (``ctVal``): in USD for inverse swaps (100 for BTC, 10 for others), else in
    base currency: ``linear_size`` when given (``Quirks.contract_size``), otherwise the power of
    ten that makes one contract worth 100 to 1000 quote units."""
    if inst.inverse:
        return 100.0 if inst.base == "BTC" else 10.0
    if linear_size is not None:
        return linear_size
    return 10.0 ** math.floor(math.log10(1000 / inst.ref_price))


class OkxFormat(GeneratedFormat):
    """``/api/v5/...``: public/instruments, market/tickers and market/ticker,
    public/funding-rate (``instId=ANY`` for all), public/funding-rate-history (newest first,
    page cap 100, ``before``/``after`` exclusive bounds, pages anchored at the newest end) and
    public/time. Only ``instType=SWAP`` has instruments; other types answer empty lists.

    Ticker volume ``vol24h`` (and ``lastSz``, ``bidSz``, ``askSz``) is in contracts of ``ctVal``
    (base currency for linear swaps, USD for the inverse ``BTC-USD-SWAP``/``ETH-USD-SWAP``, which
    are always listed); ``volCcy24h`` is in base currency.

    Quirks: every history quirk (rows are natively newest first), ``no_bulk_funding``
    (funding-rate ``instId=ANY``: 51001), ``single_symbol_tickers`` (market/tickers: 51000;
    market/ticker works), ``stale_instruments`` (ticker row as of the last trade; ticker and
    funding-rate ``ts`` = last trade), ``contract_size`` (``ctVal`` of every linear swap),
    ``inverse`` (always listed), intervals and changes (``fundingTime``/``nextFundingTime``
    spacing follows the schedule).
    """

    ccxt_id = "okx"
    extras = (
        InstrumentSpec("BTC", "USD", "BTC"),
        InstrumentSpec("ETH", "USD", "ETH"),
        InstrumentSpec("BTC", "USDC", "USDC"),
    )
    funding_cap = 0.015
    errors = ERRORS
    symbol_field = "instId"
    last_field = "last"
    history_path = "/api/v5/public/funding-rate-history"

    def contract_value(self, inst: Instrument) -> float:
        """``ctVal`` of ``inst`` on this venue (see the module function)."""
        return contract_value(inst, self.quirks.contract_size)

    @staticmethod
    def market_id(inst: Instrument) -> str:
        """``BTC-USDT-SWAP``, ``BTC-USD-SWAP`` (inverse), ``BTC-USDC-SWAP``."""
        return f"{inst.base}-{inst.quote}-SWAP"

    def routes(self) -> dict[str, Handler]:
        return {
            "/api/v5/public/instruments": self.instruments,
            "/api/v5/market/tickers": self.tickers,
            "/api/v5/market/ticker": self.tickers,
            "/api/v5/public/funding-rate": self.funding_rate,
            "/api/v5/public/funding-rate-history": self.funding_rate_history,
            "/api/v5/public/time": self.time,
        }

    @staticmethod
    def _swap_requested(query: Mapping[str, str]) -> bool:
        inst_type = query.get("instType")
        if inst_type is None:
            if query.get("instId") is None:
                raise VenueError("bad_param", "instType")
            return True
        if inst_type not in ("SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION"):
            raise VenueError("bad_param", "instType")
        return inst_type == "SWAP"

    def _instrument_entry(self, position: int, inst: Instrument) -> dict:
        lot = "1" if inst.inverse else "0.01"
        family = f"{inst.base}-{inst.quote}"
        return {
            "alias": "", "auctionEndTime": "", "baseCcy": "", "category": "1",
            "contTdSwTime": "", "ctMult": "1",
            "ctType": "inverse" if inst.inverse else "linear",
            "ctVal": trimmed(self.contract_value(inst)),
            "ctValCcy": "USD" if inst.inverse else inst.base,
            "expTime": "", "futureSettlement": False,
            "instFamily": family, "instId": self.ids[position], "instIdCode": 10_000 + position,
            "instType": "SWAP", "lever": "50", "listTime": str(inst.listed_ms),
            "lotSz": lot, "maxIcebergSz": "100000000.0000000000000000", "maxLmtAmt": "20000000",
            "maxLmtSz": "100000000", "maxMktAmt": "", "maxMktSz": "20000", "maxPlatOILmt": "",
            "maxStopSz": "20000", "maxTriggerSz": "100000000.0000000000000000",
            "maxTwapSz": "100000000.0000000000000000", "minSz": lot, "openType": "",
            "optType": "", "posLmtAmt": "", "posLmtPct": "", "preMktSwTime": "", "quoteCcy": "",
            "ruleType": "normal", "settleCcy": inst.settle, "state": "live", "stk": "",
            "tickSz": trimmed(10**-inst.price_decimals), "tradeQuoteCcyList": [], "uly": family,
        }

    def instruments(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /api/v5/public/instruments?instType=SWAP`` (optionally ``instId``)."""
        chosen = self.selected(query.get("instId")) if self._swap_requested(query) else []
        return json_reply(envelope([self._instrument_entry(p, inst) for p, inst in chosen]))

    def _ticker(self, inst: Instrument, market_id: str, now_ms: int) -> dict:
        """A ticker row as of ``now_ms`` (the last trade's time for an instrument that trades
        now and then)."""
        q = self.market.quote(inst, now_ms)
        d = inst.price_decimals
        per_contract = self.contract_value(inst) / (q.last if inst.inverse else 1.0)
        day_start = floor_to(now_ms, DAY_MS)
        utc8_day_start = floor_to(now_ms + 8 * HOUR_MS, DAY_MS) - 8 * HOUR_MS
        contracts = 0 if inst.inverse else 2
        return {
            "instType": "SWAP",
            "instId": market_id,
            "last": trimmed(q.last, d),
            "lastSz": trimmed(q.bid_size / 10 / per_contract, contracts),
            "askPx": trimmed(q.ask, d),
            "askSz": trimmed(q.ask_size / per_contract, contracts),
            "bidPx": trimmed(q.bid, d),
            "bidSz": trimmed(q.bid_size / per_contract, contracts),
            "open24h": trimmed(q.open_24h, d),
            "high24h": trimmed(q.high_24h, d),
            "low24h": trimmed(q.low_24h, d),
            "volCcy24h": trimmed(q.base_volume, 4),
            "vol24h": trimmed(q.base_volume / per_contract, contracts),
            "ts": str(now_ms),
            "sodUtc0": trimmed(self.market.price(inst, day_start), d),
            "sodUtc8": trimmed(self.market.price(inst, utc8_day_start), d),
        }

    def tickers(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /api/v5/market/tickers?instType=SWAP`` (all swaps) and
        ``GET /api/v5/market/ticker?instId=...`` (one): each row has its own ``ts``."""
        self.refuse_bulk(query.get("instId"), tickers=True)
        chosen = self.selected(query.get("instId")) if self._swap_requested(query) else []
        rows = [(p, self._ticker(inst, self.ids[p], self.venue_time(p, inst, now_ms)))
                for p, inst in chosen]
        return json_reply(envelope(self.tampered(rows)))

    def funding_rate(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /api/v5/public/funding-rate?instId=...`` (``ANY`` for every swap): the current
        rate for the settlement at ``fundingTime`` and the one after at ``nextFundingTime``
        (their difference is the interval), plus the last settled rate."""
        inst_id = query.get("instId")
        if not inst_id:
            raise VenueError("bad_param", "instId")
        if inst_id == "ANY" and self.quirks.no_bulk_funding:
            raise VenueError("bad_symbol", inst_id)
        chosen = self.selected(None if inst_id == "ANY" else inst_id)
        cap = trimmed(self.funding_cap)
        rows = []
        for position, inst in chosen:
            upcoming = self.market.next_funding_ms(inst, now_ms)
            hours = self.market.interval_h_at(inst, upcoming)
            rate = self.market.funding_rate(inst, upcoming)
            rows.append({
                "formulaType": "withRate",
                "fundingRate": trimmed(rate),
                "fundingTime": str(upcoming),
                "impactValue": "20000",
                "instId": self.ids[position],
                "instType": "SWAP",
                "interestRate": "0.0001",
                "maxFundingRate": cap,
                "method": "current_period",
                "minFundingRate": "-" + cap,
                "nextFundingRate": "",
                "nextFundingTime": str(self.market.next_funding_ms(inst, upcoming)),
                "premium": trimmed(rate - 0.0001 * hours / 8),
                "settFundingRate": trimmed(
                    self.market.funding_rate(inst, upcoming - hours * HOUR_MS)),
                "settState": "settled",
                "ts": str(self.venue_time(position, inst, now_ms)),
            })
        return json_reply(envelope(rows))

    @staticmethod
    def time(query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /api/v5/public/time``."""
        return json_reply(envelope([{"ts": str(now_ms)}]))

    def funding_rate_history(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET /api/v5/public/funding-rate-history?instId=...``: settlements newer than
        ``before`` and older than ``after`` (both exclusive), newest first, the newest ``limit``
        (default and cap 100) of them (as the venue's ``Quirks`` alter them)."""
        position, inst = self.lookup(query.get("instId"), funded=True)
        before, after = int_param(query, "before"), int_param(query, "after")
        rows = self.history_times(
            inst, None if before is None else before + 1, None if after is None else after - 1,
            page_limit(query, HISTORY_CAP, HISTORY_CAP), now_ms, start_anchored=False,
        )
        data = []
        for t in reversed(rows):
            rate = trimmed(self.market.funding_rate(inst, t))
            data.append({"formulaType": "withRate", "fundingRate": rate, "fundingTime": str(t),
                         "instId": self.ids[position], "instType": "SWAP",
                         "method": "current_period", "realizedRate": rate})
        return json_reply(envelope(data))
