"""Crypto.com Exchange v1 public market data (perpetuals), as ccxt's ``cryptocom`` reads it.

Every body is ``{"id": -1, "method": "public/...", "code": 0, "result": {...}}`` with numbers as
strings and times as integer ms; ticker rows use one-letter keys. Perpetuals (``BTCUSD-PERP``)
are quoted and margined in USD and pay funding every hour. Errors carry a non-zero ``code`` and
a ``message`` (``30003`` unknown instrument, ``40004`` bad parameter, ``42901`` rate limit); a
path that does not exist is a plain 404.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from perpflow.emulator.formats.base import GeneratedFormat, Handler
from perpflow.emulator.market import DAY_MS, FUTURE, Instrument, InstrumentSpec
from perpflow.emulator.wire import (
    ErrorStyle, Reply, VenueError, history_window, int_param, json_reply, trimmed,
)

PREFIX = "/exchange/v1/public/"
VALUATIONS_DEFAULT, VALUATIONS_CAP = 25, 300


def envelope(method: str, result: object, code: int = 0, message: str | None = None) -> dict:
    """Crypto.com's response envelope (``message`` only on errors)."""
    body = {"id": -1, "method": method, "code": code}
    if message is not None:
        body["message"] = message
    else:
        body["result"] = result
    return body


ERRORS = ErrorStyle(
    envelope=lambda code, message, now_ms: envelope("public", None, code, message),
    kinds={
        "bad_symbol": (400, 30003, "SYMBOL_NOT_FOUND"),
        "bad_param": (400, 40004, "MISSING_OR_INVALID_ARGUMENT: {}"),
        "rate_limited": (429, 42901, "TOO_MANY_REQUESTS"),
        "unavailable": (503, None, "Service Unavailable"),
        "not_found": (404, None, "Not Found"),
    },
)


class CryptocomFormat(GeneratedFormat):
    """``/exchange/v1/public/...``: get-instruments (perpetuals and one quarterly future),
    get-tickers (every instrument, or ``instrument_name``), get-valuations (``valuation_type``
    ``estimated_funding_rate``: the rate of the coming hourly settlement, what ccxt's
    ``fetch_funding_rate`` reads, one instrument per request, there being no all-instrument
    form; ``funding_hist``: settlements in ``[start_ts, end_ts]`` newest first, ``count``
    default 25 and capped at 300, anchored at ``end_ts``)."""

    ccxt_id = "cryptocom"
    extras = (InstrumentSpec("BTC", "USD", "USD", FUTURE),)
    funding_cap = 0.005
    errors = ERRORS
    symbol_field = "i"
    last_field = "a"
    perpetual_quote = "USD"
    funding_interval_h = 1

    @staticmethod
    def market_id(inst: Instrument) -> str:
        """``BTCUSD-PERP``, ``BTCUSD-260327`` (future)."""
        if inst.expiry_ms is None:
            return f"{inst.base}{inst.quote}-PERP"
        expiry = datetime.fromtimestamp(inst.expiry_ms / 1000, UTC)
        return f"{inst.base}{inst.quote}-{expiry:%y%m%d}"

    def routes(self) -> dict[str, Handler]:
        return {
            PREFIX + "get-instruments": self.instruments,
            PREFIX + "get-tickers": self.tickers,
            PREFIX + "get-valuations": self.valuations,
        }

    def _instrument(self, position: int, inst: Instrument) -> dict:
        perpetual = inst.expiry_ms is None
        return {
            "symbol": self.ids[position],
            "inst_type": "PERPETUAL_SWAP" if perpetual else "FUTURE",
            "display_name": f"{inst.base}{inst.quote} " + ("Perpetual" if perpetual else "Future"),
            "base_ccy": inst.base, "quote_ccy": inst.quote,
            "quote_decimals": inst.price_decimals, "quantity_decimals": inst.qty_decimals,
            "price_tick_size": trimmed(10**-inst.price_decimals),
            "qty_tick_size": trimmed(10**-inst.qty_decimals),
            "max_leverage": "50", "tradable": True, "expiry_timestamp_ms": inst.expiry_ms or 0,
            "beta_product": False, "underlying_symbol": f"{inst.base}{inst.quote}-INDEX",
            "contract_size": "1", "margin_buy_enabled": False, "margin_sell_enabled": False,
        }

    def instruments(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET public/get-instruments``: every tradable derivative."""
        return json_reply(envelope("public/get-instruments", {"data": [
            self._instrument(p, inst) for p, inst in self.selected(None)]}))

    def _ticker(self, position: int, inst: Instrument, now_ms: int) -> dict:
        q = self.market.quote(inst, now_ms)
        d = inst.price_decimals
        return {
            "i": self.ids[position], "h": trimmed(q.high_24h, d), "l": trimmed(q.low_24h, d),
            "a": trimmed(q.last, d), "v": trimmed(q.base_volume, 4),
            "vv": trimmed(q.quote_volume, 2), "c": trimmed(q.last / q.open_24h - 1, 4),
            "b": trimmed(q.bid, d), "k": trimmed(q.ask, d),
            "oi": trimmed(q.base_volume * 0.4, 4), "t": now_ms,
        }

    def tickers(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET public/get-tickers[?instrument_name=]``: 24h statistics and best bid/ask, each
        row with its own ``t``."""
        rows = [(p, self._ticker(p, inst, now_ms))
                for p, inst in self.selected(query.get("instrument_name"))]
        return json_reply(envelope("public/get-tickers", {"data": self.tampered(rows)}))

    def valuations(self, query: Mapping[str, str], now_ms: int) -> Reply:
        """``GET public/get-valuations?instrument_name=&valuation_type=``."""
        kind = query.get("valuation_type")
        if kind not in ("estimated_funding_rate", "funding_hist"):
            raise VenueError("bad_param", "valuation_type")
        position, inst = self.lookup(query.get("instrument_name"), funded=True)
        count = int_param(query, "count")
        count = VALUATIONS_DEFAULT if count is None else max(1, min(VALUATIONS_CAP, count))
        if kind == "estimated_funding_rate":
            rate = self.market.current_funding_rate(inst, now_ms)
            data = [{"v": trimmed(rate, 9), "t": now_ms}]
        else:
            end = int_param(query, "end_ts")
            end = now_ms if end is None else end
            start = int_param(query, "start_ts")
            start = end - DAY_MS if start is None else start
            times = history_window(self.market.first_settlement_ms(inst), inst.interval_ms,
                                   now_ms, start, end, count, oldest_first=False)
            data = [{"v": trimmed(self.market.funding_rate(inst, t), 9), "t": t}
                    for t in reversed(times)]
        return json_reply(envelope("public/get-valuations",
                                   {"data": data, "instrument_name": self.ids[position]}))
