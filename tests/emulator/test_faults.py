"""Fault injection, latency, the request log, the HTTP control API and the threaded server."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import aiohttp
import ccxt.async_support as ccxt
import pytest

from perpflow.emulator import EmulatorServer, GeneratedVenue

from .helpers import FORMATS, NOW_MS, ccxt_client, fixed_clock

TIME_PATH = {"binanceusdm": "/fapi/v1/time", "bybit": "/v5/market/time",
             "okx": "/api/v5/public/time"}


@pytest.fixture
async def server():
    venues = [GeneratedVenue(fmt, symbols=3, now_ms=fixed_clock) for fmt in FORMATS]
    async with EmulatorServer(venues) as srv:
        yield srv


@pytest.mark.parametrize("fmt", FORMATS)
async def test_503_twice_then_success(server, fmt):
    server.fail(fmt, TIME_PATH[fmt], status=503, times=2)
    async with ccxt_client(server, fmt) as ex:
        for _ in range(2):
            with pytest.raises(ccxt.ExchangeNotAvailable):
                await ex.fetch_time()
        assert await ex.fetch_time() == NOW_MS
    statuses = [r.status for r in server.requests.records(fmt)]
    assert statuses == [503, 503, 200]
    assert server.faults.rules() == []


@pytest.mark.parametrize("fmt", FORMATS)
async def test_429_carries_retry_after_and_the_venue_error(server, fmt):
    server.fail(fmt, TIME_PATH[fmt], status=429, times=2, retry_after=3)
    async with ccxt_client(server, fmt) as ex:
        with pytest.raises((ccxt.RateLimitExceeded, ccxt.DDoSProtection)):
            await ex.fetch_time()
    async with aiohttp.ClientSession() as http, \
            http.get(server.venue_base_url(fmt) + TIME_PATH[fmt]) as response:
        assert response.status == 429
        assert response.headers["Retry-After"] == "3"
        body = await response.text()
    assert {"binanceusdm": "-1003", "bybit": "10006", "okx": "50011"}[fmt] in body


async def test_fault_for_any_venue_until_cleared(server):
    server.fail(None, "/v5/market/time", status=500, times=None)
    async with ccxt_client(server, "bybit") as ex:
        for _ in range(3):
            with pytest.raises(ccxt.ExchangeNotAvailable):
                await ex.fetch_time()
        server.clear_faults()
        assert await ex.fetch_time() == NOW_MS


async def test_latency_is_added_per_venue(server):
    server.set_latency(150, venue="okx")
    async with ccxt_client(server, "okx") as okx, ccxt_client(server, "bybit") as bybit:
        started = time.perf_counter()
        await okx.fetch_time()
        slow = time.perf_counter() - started
        await bybit.fetch_time()
    assert slow >= 0.15
    delayed, undelayed = (server.requests.records(v)[-1].duration_ms for v in ("okx", "bybit"))
    assert delayed >= 150 and undelayed < delayed


async def test_request_log_records_and_counts(server):
    async with ccxt_client(server, "binanceusdm") as ex:
        await ex.load_markets()
        await ex.fetch_funding_rate_history("BTC/USDT:USDT", NOW_MS - 86_400_000, 3)
    record = server.requests.records("binanceusdm")[-1]
    assert (record.method, record.path, record.status) == ("GET", "/fapi/v1/fundingRate", 200)
    assert record.query == {"symbol": "BTCUSDT", "startTime": str(NOW_MS - 86_400_000),
                            "limit": "3"}
    assert record.monotonic <= time.monotonic() and abs(record.wall_ms - time.time() * 1000) < 60e3
    assert server.requests.counts()[("binanceusdm", "/fapi/v1/exchangeInfo")] == 1
    server.requests.clear()
    assert server.requests.records() == [] and server.requests.counts() == {}


async def test_http_control_api(server):
    control = server.base_url + "/_emulator"
    async with aiohttp.ClientSession() as http:
        async with http.get(control + "/venues") as response:
            venues = (await response.json())["venues"]
        assert venues["bybit"] == {"format": "bybit", "ccxt_config": {},
                                   "base_url": server.venue_base_url("bybit")}
        fault = {"venue": "bybit", "path": "/v5/market/time", "status": 503, "times": 1}
        async with http.post(control + "/faults", json=fault) as response:
            assert (await response.json())["faults"][0]["remaining"] == 1
        async with http.post(control + "/latency", json={"ms": 20}) as response:
            assert (await response.json())["latency_ms"] == {"*": 20.0}
        async with http.get(server.venue_base_url("bybit") + "/v5/market/time") as response:
            assert response.status == 503
        async with http.get(server.venue_base_url("bybit") + "/v5/market/time") as response:
            assert response.status == 200
        async with http.post(control + "/faults", json={**fault, "times": None}) as response:
            assert response.status == 200
        async with http.delete(control + "/faults") as response:
            assert (await response.json())["faults"] == []
        async with http.get(control + "/requests", params={"venue": "bybit"}) as response:
            log = await response.json()
        assert [r["status"] for r in log["requests"]] == [503, 200]
        assert log["counts"] == [{"venue": "bybit", "path": "/v5/market/time", "count": 2}]
        async with http.delete(control + "/requests") as response:
            assert response.status == 200
        async with http.post(control + "/faults", json={"venue": "nope", "path": "/x"}) as response:
            assert response.status == 400 and "nope" in (await response.json())["error"]
        async with http.get(control + "/nothing") as response:
            assert response.status == 404
        async with http.get(server.base_url + "/nope/v5/market/time") as response:
            assert response.status == 404
    assert server.requests.counts() == {("nope", "/v5/market/time"): 1}


def test_running_in_a_thread_for_synchronous_callers():
    venue = GeneratedVenue("okx", symbols=2, now_ms=fixed_clock)
    with EmulatorServer([venue]).running_in_thread() as srv:
        srv.fail("okx", "/api/v5/public/time", status=503)
        url = srv.venue_base_url("okx") + "/api/v5/public/time"
        with pytest.raises(urllib.error.HTTPError, match="503"):
            urllib.request.urlopen(url, timeout=5)
        with urllib.request.urlopen(url, timeout=5) as response:
            assert json.load(response) == {"code": "0", "msg": "", "data": [{"ts": str(NOW_MS)}]}
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=5)


def test_only_loopback_and_valid_names():
    with pytest.raises(ValueError, match="loopback"):
        EmulatorServer([], host="0.0.0.0")
    with pytest.raises(ValueError, match="twice"):
        EmulatorServer([GeneratedVenue("okx", symbols=1), GeneratedVenue("okx", symbols=1)])
    with pytest.raises(ValueError, match="format"):
        GeneratedVenue("kraken")
    assert EmulatorServer([], host="localhost").host == "127.0.0.1"
