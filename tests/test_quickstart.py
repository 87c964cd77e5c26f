"""The README's first command runs the main job offline: run its Python entry point for real."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

from perpflow.emulator import GeneratedVenue
from tests.conftest import ROOT

VENUES = ("binanceusdm", "bybit", "okx")


def trading_perpetuals(name: str, symbols: int) -> int:
    """How many trading perpetuals (linear and inverse) the quick start's generated venue lists."""
    market = GeneratedVenue(name, name, symbols=symbols).market
    return sum(i.kind == "perpetual" and i.status == "trading" for i in market.instruments)


def test_quickstart_collects_every_venue_into_a_fresh_sqlite_file(tmp_path):
    db = tmp_path / "quickstart.sqlite"
    env = {
        **os.environ,
        "PERPFLOW_DATABASE_URL": f"sqlite+aiosqlite:///{db}",
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_API_URL": "",
    }
    env.pop("PERPFLOW_EXCHANGES", None)
    done = subprocess.run(
        [sys.executable, "-m", "deployments.quickstart", "--symbols", "5"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Stored in sqlite+aiosqlite:///{db}" in done.stdout
    with sqlite3.connect(db) as conn:
        counts = dict(conn.execute("SELECT exchange, count(*) FROM tickers GROUP BY exchange"))
        history = dict(conn.execute("SELECT exchange, count(*) FROM funding_history GROUP BY exchange"))
        unaccounted = conn.execute(
            "SELECT count(*) FROM collection_ledger WHERE status <> 'ok'"
            " OR requested <> stored + duplicates + quarantined + failed"
        ).fetchone()[0]
    assert counts == {name: trading_perpetuals(name, 5) for name in VENUES}
    assert set(history) == set(VENUES) and min(history.values()) > 0
    assert unaccounted == 0
