"""Backfill progress that tells the truth: it advances per finished symbol window, each venue's
failures are named, and a venue whose backfill failed reads "failed", never "done"."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from flows.progress import VenueProgress, step_outcome
from flows.sweep_funding_rates import BACKFILL_KEY, sweep_funding_rates
from perpflow.emulator import EmulatorServer, GeneratedVenue
from tests.test_flows import FROZEN_MS, configure

pytestmark = pytest.mark.usefixtures("prefect_server")


async def _latest(key: str):
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.UPDATED_DESC,
            limit=1,
        )
    return found[0]


def _window(symbol: str) -> SimpleNamespace:
    return SimpleNamespace(symbol=symbol, since_ms=0, until_ms=1)


async def test_progress_advances_per_window_and_says_failed():
    key = f"test-progress-{time.time_ns()}"
    seen: list[tuple[float, str]] = []

    @flow
    async def work():
        progress = VenueProgress(key, ["a", "b"], "backfill", min_interval_s=0)
        await progress.plan("a", 4, show=True)
        await progress.plan("b", 2)
        for i, error in enumerate([None, "NetworkError: 503", None]):
            await progress.window("a", _window(f"S{i}"), SimpleNamespace(error=error))
            found = await _latest(key)
            seen.append((found.data, found.description))
        # A retried task reports a window again (now fetched): counted once, no longer failed.
        await progress.window("a", _window("S1"), SimpleNamespace(error=None))
        await progress.finish("b", "failed: TransientExchangeError: b fetch: 503")
        await progress.window("a", _window("S3"), SimpleNamespace(error=None))
        await progress.finish("a", "done")
        final = await _latest(key)
        seen.append((final.data, final.description))

    await work()
    assert [round(p, 1) for p, _ in seen] == [12.5, 25.0, 37.5, 100.0]
    assert "a: 2/4 windows, 1 failed" in seen[1][1]
    assert "b: failed: TransientExchangeError" in seen[-1][1]
    assert "a: done (4/4 windows)" in seen[-1][1] and "failed)" not in seen[-1][1]


def test_step_outcome_names_failures():
    assert step_outcome(None) == "not collected"
    assert step_outcome({"status": "ok"}) == "done"
    assert step_outcome({"status": "partial", "failed": 2}) == "done, 2 symbol(s) failed"
    assert step_outcome({"status": "failed", "error": "X: boom"}) == "failed: X: boom"
    assert step_outcome({"status": "circuit_open"}).startswith("skipped: venue down")


async def test_sweep_backfill_progress_reports_the_failed_venue(tmp_path, monkeypatch):
    url = f"sqlite+aiosqlite:///{tmp_path / 'progress.sqlite'}"
    names = ("binanceusdm", "okx")
    venues = [GeneratedVenue(name, symbols=6, now_ms=lambda: FROZEN_MS) for name in names]
    with EmulatorServer(venues).running_in_thread() as server:
        configure(monkeypatch, url, server, names)
        monkeypatch.setenv("PERPFLOW_EXCHANGE_RETRIES", "0")
        server.fail("okx", "/api/v5/public/funding-rate-history", status=503, times=None)
        state = await sweep_funding_rates(return_state=True)
    assert state.is_failed()
    found = await _latest(BACKFILL_KEY)
    assert found.data == 100.0
    assert "okx: failed: TransientExchangeError" in found.description
    assert "okx: done" not in found.description
    # Every planned window was reported as it finished (the task ran in this process).
    done = re.search(r"binanceusdm: done \((\d+)/(\d+) windows\)", found.description)
    assert done and done[1] == done[2] and int(done[1]) > 0, found.description
    failed = re.search(r"okx: failed: .*\((\d+)/(\d+) windows, (\d+) failed\)", found.description)
    assert failed and failed[1] == failed[2] == failed[3], found.description
