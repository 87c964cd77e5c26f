"""The venue REST dialects the emulator generates, keyed by ccxt exchange id."""

from perpflow.emulator.formats.base import MALFORMED_KINDS, GeneratedFormat, TickerTamper
from perpflow.emulator.formats.binancecoinm import BinanceCoinmFormat
from perpflow.emulator.formats.binanceusdm import BinanceUsdmFormat
from perpflow.emulator.formats.bybit import BybitFormat
from perpflow.emulator.formats.cryptocom import CryptocomFormat
from perpflow.emulator.formats.hyperliquid import HyperliquidFormat
from perpflow.emulator.formats.kucoinfutures import KucoinFuturesFormat
from perpflow.emulator.formats.okx import OkxFormat
from perpflow.emulator.formats.phemex import PhemexFormat
from perpflow.emulator.wire import ErrorStyle

FORMATS: dict[str, type[GeneratedFormat]] = {
    cls.ccxt_id: cls for cls in (
        BinanceUsdmFormat, BybitFormat, OkxFormat,
        BinanceCoinmFormat, CryptocomFormat, HyperliquidFormat, KucoinFuturesFormat, PhemexFormat,
    )
}
ERROR_STYLES: dict[str, ErrorStyle] = {name: cls.errors for name, cls in FORMATS.items()}

__all__ = ["ERROR_STYLES", "FORMATS", "MALFORMED_KINDS", "GeneratedFormat", "TickerTamper"]
