"""report-health end to end on SQLite and PostgreSQL: CRIT on a stale venue and on unaccounted
ledger rows, the degraded event reaches the Prefect API, no secret in any artifact or event."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter
from prefect.variables import Variable
from sqlalchemy import insert, select, update

from flows.collect_tickers import collect_tickers
from flows.report_health import _change_event, report_health, status_variable
from flows.sweep_funding_rates import sweep_funding_rates
from perpflow.emulator import EmulatorServer, GeneratedVenue
from perpflow.health import CRIT, OK, WARN, RunRecord, percentile, run_history_checks
from perpflow.settings import load_settings
from perpflow.store.partitions import ensure_partitions
from perpflow.store import (
    collection_ledger,
    create_engine,
    health_snapshots,
    tickers,
    write_health_snapshot,
)
from tests.artifacts import run_artifacts
from tests.test_flows import configure, fetch_all

pytestmark = pytest.mark.usefixtures("prefect_server")

# Venue names of this module: a cached market list (keyed by venue config) is not shared
# with another module's emulator that happened to get the same port.
BINANCE, BYBIT, OKX = "binanceusdm-health", "bybit-health", "okx-health"
VENUES = (BINANCE, BYBIT, OKX)
SECRET = "s3cret-pw-4711"


def _with_password(url: str) -> str:
    """The PostgreSQL test URL with a password (trust auth ignores it); SQLite URLs as given."""
    return url.replace("postgresql+asyncpg://postgres@", f"postgresql+asyncpg://postgres:{SECRET}@")


async def _events(name: str, since: datetime, flow_run_id) -> list:
    """Events ``name`` related to the flow run, read back from the test server's events API
    (persisted asynchronously: polled for up to 30 s)."""
    related = f"prefect.flow-run.{flow_run_id}"
    async with get_client() as client:
        for _ in range(60):
            page = await client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(name=[name]), occurred=EventOccurredFilter(since=since)
                ),
                limit=50,
            )
            found = [e for e in page.events if any(r.id == related for r in e.related)]
            if found:
                return found
            await asyncio.sleep(0.5)
    return []


async def test_stale_venue_and_unaccounted_rows_are_crit_and_emit_degraded(
    database_url, monkeypatch
):
    url = _with_password(database_url)
    venues = [GeneratedVenue(v, v.split("-")[0], symbols=8, seed=9) for v in VENUES]
    with EmulatorServer(venues).running_in_thread() as server:
        configure(monkeypatch, url, server, VENUES)
        await collect_tickers()
        await sweep_funding_rates()
    first = await report_health(return_state=True)
    checks = {c["name"]: c for c in (await first.result())["checks"]}
    for venue in VENUES:
        assert checks[f"freshness.{venue}.tickers"]["status"] == OK
        assert (
            checks[f"ledger.{venue}.1h"]["status"] == OK
            and checks[f"ledger.{venue}.1h"]["value"] == 0
        )
    assert checks["database.round_trip"]["value"] is not None
    assert any(name.startswith("database.size.table.tickers") for name in checks)
    assert "runs.collect-tickers" in checks
    if database_url.startswith("postgresql"):
        assert {"database.cache_hit_ratio", "database.connections", "database.lock_waits"} <= set(
            checks
        )

    # A venue whose newest ticker is an hour old, and a ledger row with 3 rows unaccounted for.
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            rows = (await conn.execute(select(tickers).where(tickers.c.exchange == OKX))).all()
            # An hour back may be yesterday (UTC), whose partition the collection did not need.
            await ensure_partitions(conn, "tickers", {(r.ts - timedelta(hours=1)).date() for r in rows})
            for row in rows:
                await conn.execute(
                    update(tickers)
                    .where(tickers.c.instrument_key == row.instrument_key, tickers.c.ts == row.ts)
                    .values(ts=row.ts - timedelta(hours=1))
                )
            now = datetime.now(UTC)
            await conn.execute(
                insert(collection_ledger).values(
                    run_id=str(uuid.uuid4()),
                    exchange=BYBIT,
                    dataset="tickers",
                    requested=10,
                    received=10,
                    stored=7,
                    duplicates=0,
                    quarantined=0,
                    status="ok",
                    started_at=now,
                    finished_at=now,
                )
            )
        # The previous snapshot says OK, so the change to CRIT must be announced. The Variable that
        # remembers the first run's status is removed: the stored snapshot stands in for it.
        await Variable.aunset(status_variable(url))
        await write_health_snapshot(
            engine,
            "earlier-run",
            [
                {
                    "name": "overall",
                    "status": OK,
                    "value": None,
                    "unit": None,
                    "detail": "",
                    "taken_at": now,
                }
            ],
        )
    finally:
        await engine.dispose()

    since = datetime.now(UTC) - timedelta(seconds=5)
    second = await report_health(return_state=True)
    result = await second.result()
    checks = {c["name"]: c for c in result["checks"]}
    stale, unaccounted = f"freshness.{OKX}.tickers", f"ledger.{BYBIT}.1h"
    assert checks[stale]["status"] == CRIT
    assert checks[f"freshness.{BYBIT}.tickers"]["status"] == OK
    assert (checks[unaccounted]["status"], checks[unaccounted]["value"]) == (CRIT, 3)
    assert "unaccounted 3" in checks[unaccounted]["detail"]
    assert (result["status"], result["previous"], result["event"]) == (
        CRIT,
        OK,
        "perpflow.health.degraded",
    )

    run_id = second.state_details.flow_run_id
    report = (await run_artifacts(run_id))["health-report"].data
    assert report.startswith("# Health: CRIT")
    attention = report.split("## Attention")[1].split("\n## ")[0]
    assert f"`{stale}`" in attention and f"`{unaccounted}`" in attention
    stored = await fetch_all(url, health_snapshots, health_snapshots.c.run_id == str(run_id))
    assert {r.name: r.status for r in stored}["overall"] == CRIT
    assert len(stored) == len(checks) + 1

    (event,) = await _events("perpflow.health.degraded", since, run_id)
    assert event.resource.id == "perpflow.health"
    assert (event.payload["previous"], event.payload["status"]) == (OK, CRIT)
    assert {stale, unaccounted} <= {c["name"] for c in event.payload["checks"]}

    published = [
        a.data
        for run in (first, second)
        for a in (await run_artifacts(run.state_details.flow_run_id)).values()
    ]
    assert published and not any(SECRET in str(data) for data in published)
    assert SECRET not in json.dumps(event.payload)


async def test_unreachable_database_is_crit_without_the_password(monkeypatch):
    missing = f"postgresql+asyncpg://postgres:{SECRET}@127.0.0.1:5432/perpflow_absent_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("PERPFLOW_DATABASE_URL", missing)
    monkeypatch.setenv("PERPFLOW_EXCHANGES", "[]")
    state = await report_health(return_state=True)
    result = await state.result()
    checks = {c["name"]: c for c in result["checks"]}
    assert checks["database.round_trip"]["status"] == CRIT
    assert checks["database.round_trip"]["detail"].startswith("unreachable: ")
    assert (result["status"], result["previous"], result["event"]) == (
        CRIT,
        None,
        "perpflow.health.degraded",
    )
    artifacts = await run_artifacts(state.state_details.flow_run_id)
    assert "unreachable" in artifacts["health-report"].data
    assert SECRET not in json.dumps(result) and SECRET not in artifacts["health-report"].data
    # The outage is announced once: the next run remembers CRIT without the database.
    again = await report_health()
    assert (again["status"], again["previous"], again["event"]) == (CRIT, CRIT, None)
    name = status_variable(missing)
    assert SECRET not in name and await Variable.aget(name) == CRIT


def test_status_changes_and_run_statistics():
    assert _change_event(None, OK) is None
    assert _change_event(None, WARN) == "perpflow.health.degraded"
    assert _change_event(CRIT, WARN) == "perpflow.health.recovered"
    assert _change_event(WARN, WARN) is None
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5 and percentile([], 95) is None
    assert percentile([5.0], 99) == 5.0
    assert percentile([float(v) for v in range(1, 101)], 95) == pytest.approx(95.05)
    settings = load_settings(health_failure_rate_warn=0.1, health_failure_rate_crit=0.5)
    runs = [RunRecord("a", "COMPLETED", False, 2.0)] * 8 + [RunRecord("a", "FAILED", True, 1.0)] * 2
    runs += [RunRecord("b", "CRASHED", False, None), RunRecord("b", "RUNNING", False, None)]
    (a, b) = run_history_checks(runs, settings)
    assert (a.name, a.status, a.value) == ("runs.a", WARN, 0.2)
    assert "10 runs, 2 failed, 2 late; duration p50 2.0 s, p95 2.0 s" == a.detail
    assert (b.status, b.value) == (CRIT, 1.0)
