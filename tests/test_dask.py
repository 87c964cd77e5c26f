"""The venue fan-out on a small local Dask cluster (prefect-dask's DaskTaskRunner): same rows as
in the flow's own process, exchange task runs recorded by Prefect."""

from __future__ import annotations

import pytest

from flows.collect_tickers import collect_tickers
from perpflow.emulator import EmulatorServer, GeneratedVenue
from perpflow.store import tickers
from tests.test_flows import FROZEN_MS, VENUES, _task_runs, by_venue, configure, fetch_all, perpetuals

pytestmark = pytest.mark.usefixtures("prefect_server")


async def test_collect_tickers_on_a_local_dask_cluster(tmp_path, monkeypatch):
    url = f"sqlite+aiosqlite:///{tmp_path / 'dask.sqlite'}"
    venues = [GeneratedVenue(name, symbols=20, now_ms=lambda: FROZEN_MS) for name in VENUES]
    with EmulatorServer(venues).running_in_thread() as server:
        configure(monkeypatch, url, server, VENUES)
        monkeypatch.setenv("PERPFLOW_DASK_ADDRESS", "local")
        monkeypatch.setenv("PERPFLOW_DASK_WORKERS", "1")
        server.fail("bybit", "/v5/market/tickers", status=503, times=1)
        state = await collect_tickers(return_state=True)
        counts = {name: len(perpetuals(server, name)) for name in VENUES}
    assert state.is_completed(), state
    stored = by_venue(await fetch_all(url, tickers))
    assert {name: len(rows) for name, rows in stored.items()} == counts
    runs = {run.name: run for run in await _task_runs(state.state_details.flow_run_id)}
    assert runs["fetch-tickers-bybit"].run_count == 2  # retried on the Dask worker
    assert all(runs[f"fetch-tickers-{name}"].state.is_completed() for name in VENUES)
