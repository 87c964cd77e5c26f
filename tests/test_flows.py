"""Both collection flows run end to end (Prefect test harness) against the local exchange emulator,
into a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.sorting import TaskRunSort
from sqlalchemy import select

from flows.collect_tickers import collect_tickers
from flows.common import VenueStepsFailed
from flows.sweep_funding_rates import sweep_funding_rates
from perpflow.emulator import EmulatorServer, GeneratedVenue
from perpflow.store import (
    collection_ledger,
    create_engine,
    funding_history,
    funding_rates,
    instruments,
    quarantine,
    tickers,
)

pytestmark = pytest.mark.usefixtures("prefect_server")

VENUES = ("binanceusdm", "bybit", "okx")
HOUR_MS = 3_600_000
FROZEN_MS = (int(time.time() * 1000) // 1000) * 1000 - 1




def configure(monkeypatch, database_url: str, server: EmulatorServer, venues, **extra) -> None:
    """Point the flows' settings at ``database_url`` and the emulator's ``venues``.

    Each call's venue configs carry a fresh ``testRun`` attribute: the cached market list is keyed
    by venue config, and a later emulator may reuse an earlier one's port with other markets."""
    test_run = uuid.uuid4().hex
    configs = []
    for name in venues:
        ccxt_config = {**server.ccxt_config(name), "enableRateLimit": False, "testRun": test_run}
        # Credentials a recording needs go to the venue's secret fields, never to ccxt_config.
        keys = {field: ccxt_config.pop(ccxt_name) for ccxt_name, field in
                (("apiKey", "api_key"), ("secret", "secret")) if ccxt_name in ccxt_config}
        venue = server.venues[name]
        configs.append({
            "id": venue.format if hasattr(venue, "format") else name,
            "name": name,
            "api_url": server.venue_base_url(name),
            "ccxt_config": ccxt_config,
            **keys,
            **extra.get(name, {}),
        })
    monkeypatch.setenv("PERPFLOW_DATABASE_URL", database_url)
    monkeypatch.setenv("PERPFLOW_EXCHANGES", json.dumps(configs))
    monkeypatch.setenv("PERPFLOW_RETRY_BACKOFF_SECONDS", "0.05")


async def fetch_all(database_url: str, table, *where):
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(select(table).where(*where))).all()
    finally:
        await engine.dispose()


def by_venue(rows) -> dict[str, list]:
    grouped: dict[str, list] = {}
    for row in rows:
        grouped.setdefault(row.exchange, []).append(row)
    return grouped


def perpetuals(server: EmulatorServer, name: str) -> dict:
    """``{symbol: instrument}`` of the emulated venue's trading perpetuals (linear and inverse)."""
    return {i.symbol: i for i in server.venues[name].market.instruments
            if i.kind == "perpetual" and i.status == "trading"}


def assert_ledger_balanced(outcomes) -> None:
    for o in outcomes:
        assert o["requested"] == o["stored"] + o["duplicates"] + o["quarantined"] + o["failed"], o


@pytest.fixture
def generated_market():
    """Three venues x 300 perpetuals with a frozen clock (same answers on every request)."""
    venues = [GeneratedVenue(name, symbols=300, seed=11, now_ms=lambda: FROZEN_MS) for name in VENUES]
    with EmulatorServer(venues).running_in_thread() as server:
        yield server


async def test_generated_market_end_to_end(generated_market, database_url, monkeypatch):
    server = generated_market
    configure(monkeypatch, database_url, server, VENUES)
    ticks = await collect_tickers()
    sweep = await sweep_funding_rates()
    assert {o["status"] for o in ticks + sweep} == {"ok"}
    assert_ledger_balanced(ticks + sweep)

    stored_instruments = by_venue(await fetch_all(database_url, instruments))
    stored_tickers = by_venue(await fetch_all(database_url, tickers))
    stored_rates = by_venue(await fetch_all(database_url, funding_rates))
    stored_history = by_venue(await fetch_all(database_url, funding_history))
    for name in VENUES:
        market = server.venues[name].market
        perps = perpetuals(server, name)
        assert len(perps) >= 300
        assert {r.symbol for r in stored_instruments[name]} == set(perps)
        assert {r.symbol for r in stored_tickers[name]} == set(perps)
        assert {r.symbol for r in stored_rates[name]} == set(perps)
        for row in stored_tickers[name]:
            quote = market.quote(perps[row.symbol], FROZEN_MS)
            assert (row.bid, row.ask, row.last) == (quote.bid, quote.ask, quote.last), row
            tick = 10 ** -perps[row.symbol].price_decimals
            assert row.mark_price is None or abs(row.mark_price - quote.mark) <= tick
        for row in stored_rates[name]:
            inst = perps[row.symbol]
            assert row.interval_hours == inst.interval_h, row
            assert row.funding_rate == pytest.approx(market.current_funding_rate(inst, FROZEN_MS))
        history: dict[str, list] = {}
        for row in stored_history[name]:
            history.setdefault(row.symbol, []).append(row)
        assert set(history) == set(perps)
        for symbol, rows in history.items():
            inst = perps[symbol]
            stamps = sorted(int(r.funding_ts.timestamp() * 1000) for r in rows)
            assert all(b - a == inst.interval_ms for a, b in zip(stamps, stamps[1:])), symbol
            assert stamps[-1] <= FROZEN_MS < stamps[-1] + inst.interval_ms
            assert abs(len(stamps) - 7 * 24 / inst.interval_h) <= 1
            for r in rows:
                assert r.funding_rate == market.funding_rate(inst, int(r.funding_ts.timestamp() * 1000))

    # The same flows again: nothing stored twice, the ledger counts what was already there.
    again = {(o["exchange"], o["dataset"]): o for o in await collect_tickers() + await sweep_funding_rates()}
    assert_ledger_balanced(again.values())
    for name in ("binanceusdm", "okx"):  # these venues timestamp their tickers
        assert (again[(name, "tickers")]["stored"], again[(name, "tickers")]["duplicates"]) == (0, len(stored_tickers[name]))
    assert again[("bybit", "tickers")]["stored"] == len(stored_tickers["bybit"])  # receipt time
    assert all(again[(name, "funding_history")]["requested"] == 0 for name in VENUES)
    assert len(await fetch_all(database_url, funding_history)) == sum(map(len, stored_history.values()))


async def _task_runs(flow_run_id, timeout_s: float = 30.0):
    """The flow run's task runs once the server shows each in a final state (task-run states
    reach the server as events, written asynchronously after the flow run returns)."""
    deadline = time.monotonic() + timeout_s
    async with get_client() as client:
        while True:
            runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                sort=TaskRunSort.EXPECTED_START_TIME_ASC,
                limit=200,
            )
            if all(run.state and run.state.is_final() for run in runs) or time.monotonic() > deadline:
                return runs
            await asyncio.sleep(0.2)


async def test_transient_503_is_retried_and_stored_once(tmp_path, monkeypatch):
    url = f"sqlite+aiosqlite:///{tmp_path / 'retry.sqlite'}"
    venues = [GeneratedVenue(name, symbols=20, now_ms=lambda: FROZEN_MS) for name in VENUES]
    with EmulatorServer(venues).running_in_thread() as server:
        configure(monkeypatch, url, server, VENUES)
        server.fail("bybit", "/v5/market/tickers", status=503, times=2)
        state = await collect_tickers(return_state=True)
        count = len(perpetuals(server, "bybit"))
    assert state.is_completed()
    outcomes = {o["exchange"]: o for o in await state.result()}
    assert outcomes["bybit"]["status"] == "ok" and outcomes["bybit"]["stored"] == count
    assert len(by_venue(await fetch_all(url, tickers))["bybit"]) == count
    runs = {run.name: run for run in await _task_runs(state.state_details.flow_run_id)}
    assert runs["fetch-tickers-bybit"].run_count == 3  # two 503s, then success
    assert runs["fetch-tickers-okx"].run_count == 1


async def test_a_venue_failing_every_time_fails_the_run_but_not_the_others(tmp_path, monkeypatch):
    url = f"sqlite+aiosqlite:///{tmp_path / 'fail.sqlite'}"
    venues = [GeneratedVenue(name, symbols=20, now_ms=lambda: FROZEN_MS) for name in VENUES]
    with EmulatorServer(venues).running_in_thread() as server:
        configure(monkeypatch, url, server, VENUES)
        server.fail("okx", "/api/v5/market/tickers", status=503, times=1000)
        state = await collect_tickers(return_state=True)
        counts = {name: len(perpetuals(server, name)) for name in VENUES}
        tries = server.requests.counts()[("okx", "/api/v5/market/tickers")]
    assert tries == 5  # first try + 4 retries
    assert state.is_failed()
    with pytest.raises(VenueStepsFailed, match="okx tickers"):
        await state.result()
    stored = by_venue(await fetch_all(url, tickers))
    assert {name: len(rows) for name, rows in stored.items()} == {
        name: counts[name] for name in ("binanceusdm", "bybit")
    }
    ledger = {row.exchange: row for row in await fetch_all(url, collection_ledger)}
    assert ledger["okx"].status == "failed"
    assert re.search("okx fetch_tickers: (OnMaintenance|ExchangeNotAvailable)", ledger["okx"].error)
    runs = {run.name: run for run in await _task_runs(state.state_details.flow_run_id)}
    assert runs["fetch-tickers-okx"].run_count == 5  # first try + 4 retries
    assert runs["fetch-tickers-okx"].state.is_failed()


async def test_malformed_rows_are_quarantined_with_reason(tmp_path, monkeypatch):
    url = f"sqlite+aiosqlite:///{tmp_path / 'bad.sqlite'}"
    bad = {1: "negative_price", 2: "non_numeric_price", 3: "missing_symbol"}
    venues = [GeneratedVenue("bybit", symbols=20, now_ms=lambda: FROZEN_MS, malformed=bad)]
    with EmulatorServer(venues).running_in_thread() as server:
        configure(monkeypatch, url, server, ["bybit"])
        (outcome,) = await collect_tickers()
        count = len(perpetuals(server, "bybit"))
    assert (outcome["stored"], outcome["quarantined"]) == (count - 3, 3)
    rows = await fetch_all(url, quarantine)
    reasons = {row.symbol: row.reason for row in rows}
    assert len(reasons) == 3, reasons
    assert any("must be positive" in r for r in reasons.values())
    assert all(row.payload and row.dataset == "tickers" for row in rows)
    stored = {row.symbol for row in await fetch_all(url, tickers)}
    assert len(stored) == count - 3 and not stored & set(reasons)
