"""``python -m perpflow.emulator`` as a separate process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

from perpflow.emulator.__main__ import build_server, parse_args
from perpflow.emulator.recorded import RecordedVenue

from .helpers import shared_dir


def test_cli_prints_urls_serves_and_stops_on_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-m", "perpflow.emulator", "--port", "0", "--symbols", "4",
         "--venues", "bybit,bybit-2=okx", "--seed", "3", "--latency-ms", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        announced = json.loads(process.stdout.readline())
        assert set(announced["venues"]) == {"bybit", "bybit-2"}
        assert announced["venues"]["bybit"] == announced["base_url"] + "/bybit"
        url = announced["venues"]["bybit"] + "/v5/market/tickers?category=linear"
        with urllib.request.urlopen(url, timeout=5) as response:
            symbols = [row["symbol"] for row in json.load(response)["result"]["list"]]
        assert "BTCUSDT" in symbols and len(symbols) == 4 + 3
        with urllib.request.urlopen(announced["base_url"] + "/_emulator/faults", timeout=5) as r:
            assert json.load(r)["latency_ms"] == {"*": 5.0}
        with urllib.request.urlopen(announced["base_url"] + "/_emulator/venues", timeout=5) as r:
            assert json.load(r)["venues"]["bybit-2"]["format"] == "okx"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_refuses_a_non_loopback_host():
    result = subprocess.run(
        [sys.executable, "-m", "perpflow.emulator", "--host", "0.0.0.0", "--venues", "okx"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2 and "loopback" in result.stderr


def test_cli_adds_recorded_venues_named_after_their_directory():
    directory = shared_dir("dydx")
    server = build_server(parse_args(["--venues", "", "--recorded", str(directory)]))
    assert list(server.venues) == ["dydx"] and isinstance(server.venues["dydx"], RecordedVenue)
