"""Binance COIN-M futures (``dapi``) public market data, as ccxt's ``binancecoinm`` reads it.

The same dialect as USDⓈ-M (``binanceusdm``: bare JSON, fixed-decimal strings, integer ms,
``{"code": -1121, "msg": "Invalid symbol."}`` errors), with what COIN-M changes: every contract is
inverse (quoted in USD, settled in its base coin, ``contractSize`` 100 USD for BTC and 10 USD for
the others), pays funding every 8 hours, lists ``contractStatus`` instead of ``status``, prints
24h volume both in contracts (``volume``) and in base coin (``baseVolume``), and answers the
``?symbol=`` forms of ticker/24hr, ticker/bookTicker and premiumIndex with a one-element array,
like the no-symbol forms.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar

from perpflow.emulator.formats.base import Handler
from perpflow.emulator.formats.binanceusdm import BinanceUsdmFormat
from perpflow.emulator.market import FUTURE, Instrument, InstrumentSpec
from perpflow.emulator.wire import Reply, fixed, json_reply


def contract_usd(inst: Instrument) -> int:
    """Face value of one contract in USD: 100 for BTC, 10 for the others."""
    return 100 if inst.base == "BTC" else 10


class BinanceCoinmFormat(BinanceUsdmFormat):
    """``/dapi/v1/...``: exchangeInfo, ticker/24hr, ticker/bookTicker, premiumIndex, fundingRate
    (ascending, page cap 1000, pages anchored at ``startTime``), fundingInfo (empty: every
    contract pays every 8 hours) and time. Inverse perpetuals ``BTCUSD_PERP``... plus one
    quarterly ``BTCUSD_YYMMDD``."""

    ccxt_id = "binancecoinm"
    extras = (InstrumentSpec("BTC", "USD", "BTC", FUTURE),)
    perpetual_quote = "USD"
    perpetual_inverse = True
    funding_interval_h = 8
    ccxt_config: ClassVar[Mapping] = {
        "options": {"fetchMarkets": {"types": ["inverse"]}, "fetchCurrencies": False},
    }

    @staticmethod
    def market_id(inst: Instrument) -> str:
        """``BTCUSD_PERP`` for perpetuals, ``BTCUSD_260327`` for quarterlies."""
        if inst.expiry_ms is None:
            return f"{inst.base}{inst.quote}_PERP"
        return BinanceUsdmFormat.market_id(inst)

    def routes(self) -> dict[str, Handler]:
        return {path.replace("/fapi/", "/dapi/"): handler
                for path, handler in super().routes().items()}

    def _symbol_entry(self, position: int, inst: Instrument) -> dict:
        entry = super()._symbol_entry(position, inst)
        entry["contractStatus"] = entry.pop("status")
        entry["contractSize"] = contract_usd(inst)
        entry["equalQtyPrecision"] = 4
        return entry

    @staticmethod
    def _one_or_all(query: Mapping[str, str], rows: list[dict]) -> Reply:
        """COIN-M answers the ``?symbol=`` forms with an array too."""
        return json_reply(rows)

    def tampered(self, rows: Iterable[tuple[int, dict]]) -> list[dict]:
        """ticker/24hr rows with COIN-M's volumes: ``volume`` in contracts, ``baseVolume`` in the
        base coin (ccxt reads ``baseVolume`` and derives the USD volume from the average price),
        and the ``pair``; then the configured alterations."""
        completed = []
        for position, row in rows:
            inst = self.market.instruments[position]
            base_volume = float(row["volume"])
            usd_volume = base_volume * float(row["weightedAvgPrice"])
            completed.append((position, {
                **row,
                "pair": inst.base + inst.quote,
                "volume": fixed(usd_volume / contract_usd(inst), 0),
                "baseVolume": fixed(base_volume, 8),
            }))
        return super().tampered(completed)
