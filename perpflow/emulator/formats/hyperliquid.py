"""Hyperliquid's info API (``POST /info`` with a JSON body), as ccxt's ``hyperliquid`` reads it.

Every public read is one ``POST /info`` whose ``type`` chooses the answer; bodies are bare JSON
(no envelope) with numbers as strings and times as integer ms. Perpetuals are quoted and settled
in USDC and pay funding every hour. A body that is not valid JSON, names no known ``type`` or an
unknown ``coin`` is refused with HTTP 422 and a plain-text reason (ccxt: ``ExchangeError``);
any other path or method a plain 404.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import ClassVar

from perpflow.emulator.formats.base import GeneratedFormat, Handler, PostHandler
from perpflow.emulator.market import Instrument
from perpflow.emulator.wire import (
    ErrorStyle, Reply, VenueError, history_window, json_reply, trimmed,
)

HISTORY_CAP = 500
DEFAULT_RATE_1H = 0.0001 / 8
UNIVERSE_KEYS = ("szDecimals", "name", "maxLeverage", "marginTableId")

ERRORS = ErrorStyle(
    envelope=lambda code, message, now_ms: {},
    kinds={
        "bad_symbol": (422, None, ("Failed to deserialize the JSON body into the target type: "
                                   "unknown coin {}")),
        "bad_param": (422, None, "Failed to deserialize the JSON body into the target type: {}"),
        "rate_limited": (429, None, "Too Many Requests"),
        "unavailable": (503, None, "Service Unavailable"),
        "not_found": (404, None, "Not Found"),
    },
)


def size_decimals(inst: Instrument) -> int:
    """``szDecimals``: decimals of an order size in base currency."""
    return inst.qty_decimals


def price_text(
    value: float, inst: Instrument, rounding: Callable[[float], float] = round
) -> str:
    """A price as Hyperliquid prints it: at most 5 significant figures and at most
    ``6 - szDecimals`` decimals; ``rounding`` (``round``, ``math.floor``, ``math.ceil``) picks the
    direction."""
    magnitude = math.floor(math.log10(abs(value))) if value else 0
    decimals = max(0, min(6 - size_decimals(inst), 4 - magnitude))
    scale = 10**decimals
    return trimmed(rounding(value * scale) / scale, decimals)


class HyperliquidFormat(GeneratedFormat):
    """``POST /info``: ``metaAndAssetCtxs`` (the perpetual universe and each one's market and
    current hourly funding: markets, tickers and funding rates in ccxt), ``fundingHistory``
    (``coin``, ``startTime`` inclusive, optional ``endTime``; ascending, at most 500 settlements
    counted from ``startTime``), ``spotMeta`` (only USDC, for ccxt's currencies) and
    ``exchangeStatus`` (server time)."""

    ccxt_id = "hyperliquid"
    extras = ()
    funding_cap = 0.04
    errors = ERRORS
    symbol_field = "name"
    last_field = "midPx"
    perpetual_quote = "USDC"
    funding_interval_h = 1
    ccxt_config: ClassVar[Mapping] = {"options": {"fetchMarkets": {"types": ["swap"]}}}

    @staticmethod
    def market_id(inst: Instrument) -> str:
        """The coin name: ``BTC`` (ccxt's own market id is the coin's index in the universe)."""
        return inst.base

    def routes(self) -> dict[str, Handler]:
        return {}

    def post_routes(self) -> dict[str, PostHandler]:
        return {"/info": self.info}

    def info(self, body: bytes, now_ms: int) -> Reply:
        """``POST /info``: dispatch on the body's ``type``."""
        try:
            request = json.loads(body or b"null")
        except ValueError:
            raise VenueError("bad_param", "expected a JSON object") from None
        if not isinstance(request, dict):
            raise VenueError("bad_param", "expected a JSON object")
        answer = {
            "metaAndAssetCtxs": self.meta_and_asset_ctxs,
            "fundingHistory": self.funding_history,
            "spotMeta": self.spot_meta,
            "exchangeStatus": self.exchange_status,
        }.get(request.get("type"))
        if answer is None:
            raise VenueError("bad_param", f"unknown variant {request.get('type')!r}")
        return json_reply(answer(request, now_ms))

    def _asset_ctx(self, inst: Instrument, now_ms: int) -> dict:
        q = self.market.quote(inst, now_ms)
        rate = self.market.current_funding_rate(inst, now_ms)
        open_interest = q.base_volume * 0.4
        return {
            "funding": trimmed(rate, 8),
            "openInterest": trimmed(open_interest, size_decimals(inst)),
            "prevDayPx": price_text(q.open_24h, inst),
            "dayNtlVlm": trimmed(q.quote_volume, 2),
            "premium": trimmed(rate - DEFAULT_RATE_1H, 8),
            "oraclePx": price_text(q.index, inst),
            "markPx": price_text(q.mark, inst),
            "midPx": price_text((q.bid + q.ask) / 2, inst),
            "impactPxs": [price_text(q.bid, inst, math.floor),
                          price_text(q.ask, inst, math.ceil)],
            "dayBaseVlm": trimmed(q.base_volume, size_decimals(inst)),
        }

    def meta_and_asset_ctxs(self, request: dict, now_ms: int) -> list:
        """``{"type": "metaAndAssetCtxs"}``: ``[{"universe": [...]}, [ctx...]]``, the two lists
        aligned by index (the asset index is ccxt's market id). Tampering (see
        ``GeneratedVenue``) acts on the pair: a dropped coin leaves both lists, a missing symbol
        is a universe entry without ``name``."""
        rows = []
        for position, inst in self.selected(None):
            entry = {"szDecimals": size_decimals(inst), "name": self.ids[position],
                     "maxLeverage": 40, "marginTableId": 50}
            rows.append((position, {**entry, **self._asset_ctx(inst, now_ms)}))
        served = self.tampered(rows)
        universe = [{k: row[k] for k in UNIVERSE_KEYS if k in row} for row in served]
        ctxs = [{k: v for k, v in row.items() if k not in UNIVERSE_KEYS} for row in served]
        return [{"universe": universe, "marginTables": [], "collateralToken": 0}, ctxs]

    def funding_history(self, request: dict, now_ms: int) -> list:
        """``{"type": "fundingHistory", "coin", "startTime", "endTime"?}``: settlements in
        ``[startTime, endTime]`` ascending, the oldest 500 of them."""
        start = request.get("startTime")
        end = request.get("endTime")
        if not isinstance(start, int) or not (end is None or isinstance(end, int)):
            raise VenueError("bad_param", "startTime/endTime must be integers")
        position, inst = self.lookup(request.get("coin"), funded=True)
        rows = history_window(self.market.first_settlement_ms(inst), inst.interval_ms, now_ms,
                              start, end, HISTORY_CAP, oldest_first=True)
        result = []
        for t in rows:
            rate = self.market.funding_rate(inst, t)
            result.append({"coin": self.ids[position], "fundingRate": trimmed(rate, 8),
                           "premium": trimmed(rate - DEFAULT_RATE_1H, 8), "time": t})
        return result

    @staticmethod
    def spot_meta(request: dict, now_ms: int) -> dict:
        """``{"type": "spotMeta"}``: no spot pairs, only the USDC collateral token."""
        return {"universe": [], "tokens": [{
            "name": "USDC", "szDecimals": 8, "weiDecimals": 8, "index": 0,
            "tokenId": "0x6d1e7cde53ba9467b783cb7c530ce054", "isCanonical": True,
            "evmContract": None, "fullName": None,
        }]}

    @staticmethod
    def exchange_status(request: dict, now_ms: int) -> dict:
        """``{"type": "exchangeStatus"}``: the server time."""
        return {"specialStatuses": None, "time": str(now_ms)}
