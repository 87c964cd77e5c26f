"""Shared helpers for the emulator tests: a fixed clock and real ccxt clients over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import ccxt.async_support as ccxt
import pytest

from perpflow.emulator import EmulatorServer
from perpflow.exchanges import rewrite_api_urls

NOW_MS = 1_767_243_600_123  # 2026-01-01T05:00:00.123Z
HOUR_MS = 3_600_000
FORMATS = ("binanceusdm", "bybit", "okx")
CCXT_CONFIG = {
    "binanceusdm": {"options": {"fetchMarkets": {"types": ["linear"]}, "fetchCurrencies": False}},
    "bybit": {"options": {"fetchMarkets": {"types": ["linear"]}}},
    "okx": {"options": {"fetchMarkets": {"types": ["swap"]}}},
}
SHARED_HTTP = Path(__file__).resolve().parents[2].parent / "shared" / "realdata-http"


def fixed_clock() -> int:
    """The tests' clock: always ``NOW_MS``."""
    return NOW_MS


@asynccontextmanager
async def ccxt_client(
    server: EmulatorServer, name: str, ccxt_id: str | None = None
) -> AsyncIterator[ccxt.Exchange]:
    """An unmodified ccxt async client of venue ``name`` pointed at the emulator."""
    ccxt_id = ccxt_id or server.venues[name].format
    config = {**CCXT_CONFIG.get(ccxt_id, {}), **server.ccxt_config(name), "enableRateLimit": False,
              "timeout_on_exit": 0}  # ccxt otherwise sleeps 250 ms in close() (for TLS)
    exchange = getattr(ccxt, ccxt_id)(config)
    exchange.urls["api"] = rewrite_api_urls(exchange.urls["api"], server.venue_base_url(name))
    try:
        yield exchange
    finally:
        await exchange.close()


def shared_dir(venue: str) -> Path:
    """``../shared/realdata-http/<venue>``, skipping the test when the shared set is absent."""
    directory = SHARED_HTTP / venue
    if not (directory / "routes.json").is_file():
        pytest.skip(f"recorded bodies not available: {directory} is missing (../shared absent)")
    return directory
