"""Liveness: database time limits that fail fast with a clear message, a Prefect API error while
taking a rate-limit slot retried like a transient venue error, stalled runs flagged by
report-health's liveness check and crashed by the heartbeat automation."""

from __future__ import annotations

import asyncio
import os
import struct
import sys
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from sqlalchemy import text

import tasks.exchange
from deployments.automations import FINAL_EVENTS, HEARTBEAT, stalled_runs_crashed
from flows.collect_tickers import collect_tickers
from perpflow import health
from perpflow.emulator import EmulatorServer, GeneratedVenue
from perpflow.settings import Settings
from perpflow.store.engine import DatabaseTimeout, create_engine
from tasks.exchange import rate_limit_name
from tasks.health import read_running_runs
from tests.test_flows import FROZEN_MS, _task_runs, configure

PASSWORD = "never-print-me-4711"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _message(kind: bytes, payload: bytes = b"") -> bytes:
    return kind + struct.pack("!i", len(payload) + 4) + payload


async def _handshake(reader, writer) -> None:
    """Answer a PostgreSQL client's startup as a trusting server would (protocol 3.0)."""
    while True:
        size = struct.unpack("!i", await reader.readexactly(4))[0]
        body = await reader.readexactly(size - 4)
        if struct.unpack("!i", body[:4])[0] != 80877103:  # not an SSLRequest: the startup
            break
        writer.write(b"N")
    status = b"".join(_message(b"S", k + b"\0" + v + b"\0") for k, v in (
        (b"server_version", b"15.0"), (b"client_encoding", b"UTF8"),
        (b"integer_datetimes", b"on")))
    writer.write(_message(b"R", struct.pack("!i", 0)) + status
                 + _message(b"K", struct.pack("!ii", 1, 2)) + _message(b"Z", b"I"))
    await writer.drain()


@asynccontextmanager
async def mute_server(handshake: bool):
    """A TCP server on 127.0.0.1 that accepts connections and never answers (``handshake``:
    after completing PostgreSQL's startup, so only statements go unanswered); yields its port."""
    held = []

    async def serve(reader, writer):
        held.append(writer)
        if handshake:
            await _handshake(reader, writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()


def _url(port: int) -> str:
    return f"postgresql+asyncpg://collector:{PASSWORD}@127.0.0.1:{port}/market"


async def _first_statement(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


async def test_a_database_that_never_answers_the_connect_fails_fast_naming_the_host(monkeypatch):
    monkeypatch.setenv("PERPFLOW_DATABASE_CONNECT_TIMEOUT_SECONDS", "1")
    async with mute_server(handshake=False) as port:
        started = time.monotonic()
        with pytest.raises(DatabaseTimeout) as caught:
            await _first_statement(_url(port))
        took = time.monotonic() - started
    assert took < 5
    message = str(caught.value)
    assert f"127.0.0.1:{port}/market" in message and "no connection within 1 s" in message
    assert PASSWORD not in message and "collector" not in message


async def test_a_database_that_stops_answering_statements_fails_fast(monkeypatch):
    for name in ("DATABASE_CONNECT", "DATABASE_STATEMENT", "MAINTENANCE_STATEMENT"):
        monkeypatch.setenv(f"PERPFLOW_{name}_TIMEOUT_SECONDS", "1")
    async with mute_server(handshake=True) as port:
        started = time.monotonic()
        with pytest.raises(DatabaseTimeout) as caught:
            await _first_statement(_url(port))
        took = time.monotonic() - started
    assert took < 15
    message = str(caught.value)
    assert f"127.0.0.1:{port}/market" in message and "no answer to a statement" in message
    assert PASSWORD not in message


async def test_postgres_sessions_carry_the_statement_timeout(database_url, monkeypatch):
    if not database_url.startswith("postgresql"):
        pytest.skip("statement_timeout is PostgreSQL's")
    monkeypatch.setenv("PERPFLOW_DATABASE_STATEMENT_TIMEOUT_SECONDS", "1")
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SHOW statement_timeout"))).scalar_one() == "1s"
            started = time.monotonic()
            with pytest.raises(Exception, match="statement timeout"):
                await conn.execute(text("SELECT pg_sleep(5)"))
            assert time.monotonic() - started < 4
    finally:
        await engine.dispose()


@pytest.mark.usefixtures("prefect_server")
async def test_prefect_api_error_taking_a_slot_is_retried_like_a_transient_venue_error(
    tmp_path, monkeypatch
):
    url = f"sqlite+aiosqlite:///{tmp_path / 'slots.sqlite'}"
    real = tasks.exchange.rate_limit
    failures = {"left": 2}

    async def flaky_api(name, *args, **kwargs):
        # What prefect's slot service raises when the API answers 503 after its own retries.
        if failures["left"]:
            failures["left"] -= 1
            raise ConcurrencySlotAcquisitionError(
                f"Unable to acquire concurrency slots on {[name]!r}: 503 Service Unavailable"
            )
        return await real(name, *args, **kwargs)

    venues = [GeneratedVenue(name, symbols=5, now_ms=lambda: FROZEN_MS) for name in ("okx",)]
    with EmulatorServer(venues).running_in_thread() as server:
        configure(monkeypatch, url, server, ("okx",))
        async with get_client() as client:
            limit = await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=rate_limit_name("okx"), limit=100,
                                             slot_decay_per_second=100.0)
            )
        monkeypatch.setattr(tasks.exchange, "rate_limit", flaky_api)
        try:
            state = await collect_tickers(return_state=True)
        finally:
            async with get_client() as client:
                await client.delete_global_concurrency_limit_by_name(rate_limit_name("okx"))
    assert limit and state.is_completed()
    (outcome,) = await state.result()
    assert outcome["status"] == "ok" and failures["left"] == 0
    runs = {run.name: run for run in await _task_runs(state.state_details.flow_run_id)}
    # The first request (market loading) met both API errors: retried, then it took its slot.
    assert runs["load-markets-okx"].run_count == 3
    assert runs["load-markets-okx"].state.is_completed()


def test_liveness_flags_a_run_without_heartbeat_crit_and_without_progress_warn():
    settings = Settings()
    runs = [
        health.RunningRun("collect-tickers", "dead-fox", "r1", NOW - timedelta(hours=1),
                          NOW - timedelta(seconds=settings.health_heartbeat_stale_seconds + 1),
                          NOW - timedelta(minutes=50)),
        health.RunningRun("sweep-funding-rates", "stuck-owl", "r2", NOW - timedelta(hours=2),
                          NOW - timedelta(seconds=30),
                          NOW - timedelta(seconds=settings.health_progress_stale_seconds + 1)),
        health.RunningRun("collect-tickers", "busy-bee", "r3", NOW - timedelta(minutes=1),
                          None, NOW - timedelta(seconds=5)),
    ]
    checks = {c.name: c for c in health.liveness_checks(runs, settings, NOW)}
    assert checks["liveness"].status == health.CRIT and checks["liveness"].value == 2
    assert checks["liveness.collect-tickers.dead-fox"].status == health.CRIT
    assert "without a heartbeat" in checks["liveness.collect-tickers.dead-fox"].detail
    assert checks["liveness.sweep-funding-rates.stuck-owl"].status == health.WARN
    assert "liveness.collect-tickers.busy-bee" not in checks
    assert health.liveness_checks([], settings, NOW)[0].status == health.OK


@pytest.mark.usefixtures("prefect_server")
async def test_running_runs_are_read_with_their_progress():
    started = asyncio.Event()
    release = asyncio.Event()

    @flow(name="liveness-probe")
    async def long_running():
        started.set()
        await release.wait()

    running = asyncio.create_task(long_running())
    await asyncio.wait_for(started.wait(), 30)
    try:
        for _ in range(40):
            found = [r for r in await read_running_runs.fn() if r.name == "liveness-probe"]
            if found:
                break
            await asyncio.sleep(0.25)
    finally:
        release.set()
        await running
    (run,) = found
    assert run.started <= datetime.now(UTC) and run.last_progress is None
    checks = health.liveness_checks(found, Settings(), datetime.now(UTC))
    assert [c.status for c in checks] == [health.OK]


def test_stalled_run_automation_crashes_runs_without_heartbeat():
    automation = stalled_runs_crashed(600, ("collect-tickers",))
    trigger = automation.trigger
    assert trigger.posture == "Proactive" and trigger.within == timedelta(seconds=600)
    assert trigger.after == {HEARTBEAT} and trigger.expect == {HEARTBEAT, *FINAL_EVENTS}
    assert trigger.for_each == {"prefect.resource.id"}
    assert trigger.match_related["prefect.resource.name"] == ["collect-tickers"]
    (action,) = automation.actions
    assert action.type == "change-flow-run-state" and action.state.value == "CRASHED"


ZOMBIE = '''
import time
from prefect import flow

@flow(name="liveness-zombie")
def zombie():
    print("running", flush=True)
    time.sleep(600)

zombie()
'''


@pytest.mark.usefixtures("prefect_server")
async def test_a_killed_run_is_set_crashed_by_the_stalled_run_automation(tmp_path):
    """A flow run whose process is killed with SIGKILL stops heartbeating; the automation (with
    Prefect's minimum heartbeat of 30 s and a 40 s window) sets it Crashed."""
    stale_s = 40
    script = tmp_path / "zombie.py"
    script.write_text(ZOMBIE)
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(),
           "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}
    async with get_client() as client:
        automation_id = await client.create_automation(
            stalled_runs_crashed(stale_s, ("liveness-zombie",))
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(script), env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            while b"running" not in await asyncio.wait_for(process.stdout.readline(), 60):
                pass
            runs = await client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["liveness-zombie"])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
                ),
            )
            (run,) = runs
            await asyncio.sleep(2)  # the first heartbeat is sent as the run starts
            process.kill()  # SIGKILL: no final state is ever reported
            await process.wait()
            killed = time.monotonic()
            state = None
            while time.monotonic() - killed < stale_s + 60:
                state = (await client.read_flow_run(run.id)).state
                if state.type == StateType.CRASHED:
                    break
                await asyncio.sleep(2)
        finally:
            if process.returncode is None:
                process.kill()
            await client.delete_automation(automation_id)
    assert state is not None and state.type == StateType.CRASHED, state
    assert "no heartbeat" in (state.message or "")
