"""The per-venue circuit breaker: its decisions, its shared state in the market database (both
dialects, racing callers), its revision, and the collection flow against a venue that fails every
request (opens after N runs, skips without a request, probes half-open, closes on recovery, each
transition announced once)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from prefect.client.orchestration import get_client
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventResourceFilter,
)
from sqlalchemy import inspect

from flows.collect_tickers import collect_tickers
from perpflow import circuit
from perpflow.circuit import CALL, CLOSED, HALF_OPEN, OPEN, PROBE, SKIP, Breaker, Circuit
from perpflow.emulator import EmulatorServer, GeneratedVenue
from perpflow.normalize import instrument_rows
from perpflow.store import LedgerEntry, collection_ledger, create_engine, init_schema, metadata
from perpflow.store import upsert_instruments
from perpflow.store.migrate import alembic_config
from tests.test_flows import FROZEN_MS, configure, fetch_all, perpetuals

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BREAKER = Breaker(threshold=3, cooldown_s=60)


def test_decide_calls_a_closed_circuit_and_probes_only_after_the_cooldown():
    assert circuit.decide(Circuit("v"), BREAKER, T0) == CALL
    opened = Circuit("v", OPEN, 3, T0, T0)
    assert circuit.decide(opened, BREAKER, T0 + timedelta(seconds=59)) == SKIP
    assert circuit.decide(opened, BREAKER, T0 + timedelta(seconds=60)) == PROBE
    probing = Circuit("v", HALF_OPEN, 3, T0, T0, T0 + timedelta(seconds=60))
    assert circuit.decide(probing, BREAKER, T0 + timedelta(seconds=61)) == SKIP
    # A probe whose worker died is claimed again one cool-down later.
    assert circuit.decide(probing, BREAKER, T0 + timedelta(seconds=120)) == PROBE


async def test_opens_after_threshold_failures_once_even_when_callers_race(engine):
    for i in range(2):
        assert await circuit.note_failure(engine, "v", BREAKER, T0, f"E: {i}") is None
    # Two workers fail the third and fourth step at once: exactly one of them opens it.
    results = await asyncio.gather(
        circuit.note_failure(engine, "v", BREAKER, T0, "E: a"),
        circuit.note_failure(engine, "v", BREAKER, T0, "E: b"),
    )
    opened = [r for r in results if r is not None]
    assert len(opened) == 1 and opened[0].state == OPEN and opened[0].down_since == T0
    state = await circuit.read_circuit(engine, "v")
    assert (state.state, state.opened_at) == (OPEN, T0)
    assert await circuit.admit(engine, "v", BREAKER, T0 + timedelta(seconds=30)) == SKIP


async def test_success_resets_the_count_of_a_closed_circuit(engine):
    await circuit.note_failure(engine, "v", BREAKER, T0, "E: 1")
    await circuit.note_failure(engine, "v", BREAKER, T0, "E: 2")
    assert await circuit.note_success(engine, "v", T0) is None  # closed: nothing to announce
    assert (await circuit.read_circuit(engine, "v")).failures == 0
    await circuit.note_failure(engine, "v", BREAKER, T0, "E: 3")
    assert (await circuit.read_circuit(engine, "v")).state == CLOSED


async def test_one_probe_after_cooldown_failed_probe_reopens_silently_success_closes_once(engine):
    for i in range(3):
        await circuit.note_failure(engine, "v", BREAKER, T0, f"E: {i}")
    later = T0 + timedelta(seconds=61)
    decisions = await asyncio.gather(
        *(circuit.admit(engine, "v", BREAKER, later) for _ in range(4))
    )
    assert sorted(decisions) == [PROBE, SKIP, SKIP, SKIP]
    assert (await circuit.read_circuit(engine, "v")).state == HALF_OPEN
    # The probe fails: open again, a new cool-down from now, the outage still dated from T0.
    assert await circuit.note_failure(engine, "v", BREAKER, later, "E: probe") is None
    state = await circuit.read_circuit(engine, "v")
    assert (state.state, state.opened_at, state.down_since) == (OPEN, later, T0)
    assert await circuit.admit(engine, "v", BREAKER, later + timedelta(seconds=30)) == SKIP
    again = later + timedelta(seconds=60)
    assert await circuit.admit(engine, "v", BREAKER, again) == PROBE
    closed = await asyncio.gather(circuit.note_success(engine, "v", again),
                                  circuit.note_success(engine, "v", again))
    assert [c.down_since for c in closed if c is not None] == [T0]
    assert await circuit.read_circuit(engine, "v") == Circuit("v", last_error="E: probe")


async def test_skipped_step_ledger_row_balances_with_the_known_instruments(engine):
    markets = {f"S{i}/USDT:USDT": {"symbol": f"S{i}/USDT:USDT", "base": f"S{i}", "quote": "USDT",
                                   "settle": "USDT", "linear": True, "inverse": False,
                                   "contractSize": 1, "active": True, "id": f"S{i}USDT"}
               for i in range(7)}
    await upsert_instruments(engine, instrument_rows("v", markets, FROZEN_MS))
    entry = LedgerEntry("run-1", "v", "tickers", circuit.CIRCUIT_OPEN, T0, T0, None, "down", 0)
    counts = await circuit.record_skipped(engine, entry)
    assert (counts.requested, counts.failed, counts.stored) == (7, 7, 0)
    async with engine.connect() as conn:
        row = (await conn.execute(collection_ledger.select())).one()
    assert (row.status, row.requested, row.failed, row.stored, row.attempts) == (
        "circuit_open", 7, 7, 0, 0)


async def test_revision_0011_downgrades_and_upgrades(blank_database_url):
    engine = create_engine(blank_database_url)

    def tables(connection) -> set[str]:
        return set(inspect(connection).get_table_names())

    def to_0009(connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "0009")

    try:
        await init_schema(engine)
        await circuit.note_failure(engine, "v", BREAKER, T0, "E: 1")
        async with engine.begin() as conn:
            await conn.run_sync(to_0009)
        async with engine.connect() as conn:
            found = await conn.run_sync(tables)
        assert "venue_circuits" not in found and "collection_ledger" in found
        await init_schema(engine)
        assert await circuit.read_circuit(engine, "v") == Circuit("v")
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c), metadata)
            )
        assert not [d for d in diff if "venue_circuits" in repr(d)]
    finally:
        await engine.dispose()


# -- the collection flow against a venue that fails every request -------------------------------

TICKERS = "/api/v5/market/tickers"
COOLDOWN_S = 4.0


async def _venue_events(name: str, since: datetime, venue: str, settle_s: float = 3.0) -> list:
    """Events ``name`` of resource ``perpflow.venue.<venue>`` since ``since`` (persisted
    asynchronously: polled until some arrive, then a little longer to catch any extra)."""
    query = EventFilter(
        event=EventNameFilter(name=[name]),
        occurred=EventOccurredFilter(since=since),
        resource=EventResourceFilter(id=[f"perpflow.venue.{venue}"]),
    )
    found: list = []
    async with get_client() as client:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = (await client.read_events(filter=query, limit=50)).events
            if found:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(settle_s)
        return (await client.read_events(filter=query, limit=50)).events


@pytest.mark.usefixtures("prefect_server")
async def test_flow_opens_skips_probes_and_closes_the_circuit_of_a_failing_venue(
    tmp_path, monkeypatch
):
    url = f"sqlite+aiosqlite:///{tmp_path / 'circuit.sqlite'}"
    venues = [
        GeneratedVenue(name, symbols=12, now_ms=lambda: FROZEN_MS) for name in ("bybit", "okx")
    ]
    since = datetime.now(UTC)
    with EmulatorServer(venues).running_in_thread() as server:
        configure(monkeypatch, url, server, ("bybit", "okx"))
        monkeypatch.setenv("PERPFLOW_EXCHANGE_RETRIES", "1")
        monkeypatch.setenv("PERPFLOW_CIRCUIT_FAILURES", "3")
        monkeypatch.setenv("PERPFLOW_CIRCUIT_COOLDOWN_SECONDS", str(COOLDOWN_S))
        server.fail("okx", TICKERS, status=503, times=None)

        def tries() -> int:
            return server.requests.counts().get(("okx", TICKERS), 0)

        async def run():
            state = await collect_tickers(return_state=True)
            if not state.is_completed():
                return state, None
            return state, {o["exchange"]: o for o in await state.result()}

        for n in range(1, 4):  # three failed runs: the third opens the circuit
            state, _ = await run()
            assert state.is_failed() and tries() == 2 * n
        engine = create_engine(url)
        try:
            assert (await circuit.read_circuit(engine, "okx")).state == OPEN
        finally:
            await engine.dispose()

        opened_at = time.monotonic()
        state, outcomes = await run()  # open: skipped without a request, the run completes
        assert time.monotonic() - opened_at < COOLDOWN_S, "the run outlasted the cool-down"
        assert state.is_completed() and tries() == 6
        skipped = outcomes["okx"]
        assert skipped["status"] == "circuit_open" and skipped["attempts"] == 0
        known = len(perpetuals(server, "okx"))
        assert skipped["requested"] == skipped["failed"] == known and skipped["stored"] == 0
        assert "venue down" in skipped["error"]
        assert outcomes["bybit"]["status"] == "ok"

        await asyncio.sleep(COOLDOWN_S)
        state, _ = await run()  # half-open probe, still failing: open again, a new cool-down
        assert state.is_failed() and tries() == 8
        server.clear_faults()
        state, outcomes = await run()
        assert state.is_completed() and outcomes["okx"]["status"] == "circuit_open"
        assert tries() == 8

        await asyncio.sleep(COOLDOWN_S)
        state, outcomes = await run()  # the probe succeeds: closed
        assert state.is_completed() and outcomes["okx"]["status"] == "ok" and tries() > 8
        probed = tries()
        state, outcomes = await run()
        assert outcomes["okx"]["status"] == "ok" and tries() > probed

    ledger = [r for r in await fetch_all(url, collection_ledger) if r.exchange == "okx"]
    assert sorted(r.status for r in ledger) == sorted(
        ["failed"] * 4 + ["circuit_open"] * 2 + ["ok"] * 2
    )
    assert all(r.requested == r.stored + r.duplicates + r.quarantined + r.failed for r in ledger)
    opened = await _venue_events("perpflow.venue.circuit_opened", since, "okx")
    closed = await _venue_events("perpflow.venue.circuit_closed", since, "okx")
    assert len(opened) == 1 and len(closed) == 1
    assert opened[0].payload["failures"] == 3 and "okx fetch_tickers" in opened[0].payload["error"]
    assert closed[0].payload["down_seconds"] > COOLDOWN_S
    assert not await _venue_events("perpflow.venue.circuit_opened", since, "bybit", settle_s=0)
