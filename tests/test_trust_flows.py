"""Issue 13's findings through whole flow runs (Prefect test harness, emulator, real databases):
a venue whose store fails, even its ledger row, leaves the other venues to finish; malformed
values (object-valued price, boolean bid, a symbol repeated in one response) are quarantined."""

from __future__ import annotations

import pytest

import asyncio
import threading

from flows.collect_tickers import collect_tickers
from flows.common import VenueStepsFailed, describe
from perpflow import snapshots, store
from perpflow.emulator import EmulatorServer, GeneratedVenue
from perpflow.emulator.formats.base import TickerTamper
from perpflow.store import collection_ledger, quarantine, tickers
from tests.artifacts import run_artifacts, table
from tests.test_flows import (
    _task_runs,
    FROZEN_MS,
    VENUES,
    assert_ledger_balanced,
    by_venue,
    configure,
    fetch_all,
    perpetuals,
)

pytestmark = pytest.mark.usefixtures("prefect_server")


def _failing_for(venue: str, real, error: Exception):
    """``real`` (a store function taking the entry or batch as its 3rd/2nd argument) raising
    ``error`` for ``venue``'s steps only."""

    async def wrapped(engine, *args):
        label = next(a.exchange for a in args if hasattr(a, "exchange"))
        if label == venue:
            raise error
        return await real(engine, *args)

    return wrapped


async def test_a_store_failure_with_the_ledger_down_too_leaves_the_other_venues_to_finish(
    database_url, monkeypatch
):
    """okx's store fails past its retries and so does its ledger row (the database gone for it),
    while the two other venues are still fetching (held until okx has given up): before, the
    exception left ``run_step``, ended the gather and closed their clients mid-fetch."""
    venues = [GeneratedVenue(name, symbols=20, now_ms=lambda: FROZEN_MS) for name in VENUES]
    down = ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
    gave_up = threading.Event()
    attempts = []

    async def ledger_down(engine, entry, requested):
        if entry.exchange != "okx":
            return await real_record(engine, entry, requested)
        attempts.append(entry)
        if len(attempts) == 3:  # the record-failure task's last retry
            gave_up.set()
        raise down

    async def held_fetch(venue, *args, **kwargs):
        if venue.label != "okx":
            assert await asyncio.to_thread(gave_up.wait, 60)
            await asyncio.sleep(0.5)  # okx's step has returned by now
        return await real_fetch(venue, *args, **kwargs)

    real_record, real_fetch = store.record_failure, snapshots.fetch_snapshots
    monkeypatch.setattr(store, "store_batch", _failing_for("okx", store.store_batch, down))
    monkeypatch.setattr(store, "record_failure", ledger_down)
    monkeypatch.setattr(snapshots, "fetch_snapshots", held_fetch)
    with EmulatorServer(venues).running_in_thread() as server:
        configure(monkeypatch, database_url, server, VENUES)
        state = await collect_tickers(return_state=True)
        counts = {name: len(perpetuals(server, name)) for name in VENUES}
    assert state.is_failed()
    with pytest.raises(VenueStepsFailed, match="okx tickers: MarketDatabaseError: market database"):
        await state.result()
    runs = await _task_runs(state.state_details.flow_run_id)
    artifacts = await run_artifacts(state.state_details.flow_run_id)
    outcomes = {o["exchange"]: o for o in table(artifacts["collect-tickers-ledger"])}
    okx = outcomes["okx"]
    assert okx["status"] == "failed" and okx["requested"] == okx["failed"] == counts["okx"]
    assert okx["error"].startswith("MarketDatabaseError: market database: storing tickers failed; "
                                   "caused by ConnectionRefusedError: [Errno 111] Connect call")
    assert "ledger row not written: ConnectionRefusedError" in okx["error"]
    stored = by_venue(await fetch_all(database_url, tickers))
    assert {name: len(rows) for name, rows in stored.items()} == {
        "binanceusdm": counts["binanceusdm"], "bybit": counts["bybit"]}
    ledger = {row.exchange: row for row in await fetch_all(database_url, collection_ledger)}
    assert set(ledger) == {"binanceusdm", "bybit"}  # okx's row could not be written
    assert all(row.status == "ok" for row in ledger.values())
    assert all(outcomes[name]["status"] == "ok" for name in ("binanceusdm", "bybit"))
    assert len(attempts) == 3
    okx_done = max(run.end_time for run in runs if run.name == "record-failure-okx")
    for name in ("binanceusdm", "bybit"):
        fetched = next(run for run in runs if run.name == f"fetch-tickers-{name}")
        assert fetched.state.is_completed() and fetched.end_time > okx_done


async def test_a_failed_store_is_a_failed_ledger_row_with_its_cause_and_what_it_meant_to_fetch(
    tmp_path, monkeypatch
):
    url = f"sqlite+aiosqlite:///{tmp_path / 'store-fails.sqlite'}"
    venues = [GeneratedVenue(name, symbols=20, now_ms=lambda: FROZEN_MS) for name in VENUES]
    broken = TimeoutError()
    monkeypatch.setattr(store, "store_batch", _failing_for("bybit", store.store_batch, broken))
    with EmulatorServer(venues).running_in_thread() as server:
        configure(monkeypatch, url, server, VENUES)
        state = await collect_tickers(return_state=True)
        counts = {name: len(perpetuals(server, name)) for name in VENUES}
    assert state.is_failed()
    ledger = {row.exchange: row for row in await fetch_all(url, collection_ledger)}
    assert set(ledger) == set(VENUES)
    bybit = ledger["bybit"]
    assert (bybit.status, bybit.error) == (
        "failed", "MarketDatabaseError: market database: storing tickers failed; "
        "caused by TimeoutError (no message)")
    assert (bybit.requested, bybit.failed, bybit.stored) == (counts["bybit"], counts["bybit"], 0)
    for row in ledger.values():
        assert row.requested == row.stored + row.duplicates + row.quarantined + row.failed
    assert {ledger[name].status for name in ("okx", "binanceusdm")} == {"ok"}
    stored = by_venue(await fetch_all(url, tickers))
    assert set(stored) == {"okx", "binanceusdm"}


def test_describe_names_the_class_and_a_readable_cause():
    try:
        try:
            raise OSError("connection\n reset")
        except OSError as cause:
            raise RuntimeError("store failed") from cause
    except RuntimeError as exc:
        assert describe(exc) == "RuntimeError: store failed; caused by OSError: connection reset"
    assert describe(TimeoutError()) == "TimeoutError (no message)"
    assert len(describe(ValueError("x" * 5000))) == 2000


def _tampered(real):
    """bybit's ticker rows as served, with C003USDT's last price an object (ccxt derives a price
    for it anyway), C001USDT's bid a boolean (ccxt: None), and C005USDT listed twice, the second
    time with a last price of 999999 (ccxt keeps the last)."""

    def apply(self, rows, symbol_field, last_field):
        served = real(self, rows, symbol_field, last_field)
        if last_field != "lastPrice":
            return served
        by_id = {row.get(symbol_field): row for row in served}
        if "C003USDT" in by_id:
            by_id["C003USDT"][last_field] = {"value": by_id["C003USDT"][last_field], "scale": 2}
            by_id["C001USDT"]["bid1Price"] = True
            served.append({**by_id["C005USDT"], last_field: "999999"})
        return served

    return apply


async def test_object_price_boolean_bid_and_repeated_symbol_are_quarantined(
    database_url, monkeypatch
):
    url = database_url
    monkeypatch.setattr(TickerTamper, "apply", _tampered(TickerTamper.apply))
    venues = [GeneratedVenue("bybit", symbols=20, now_ms=lambda: FROZEN_MS)]
    with EmulatorServer(venues).running_in_thread() as server:
        configure(monkeypatch, url, server, ["bybit"])
        (outcome,) = await collect_tickers()
        count = len(perpetuals(server, "bybit"))
    assert_ledger_balanced([outcome])
    assert (outcome["requested"], outcome["stored"], outcome["quarantined"]) == (
        count, count - 3, 3)
    held = {row.symbol: row for row in await fetch_all(url, quarantine)}
    reasons = [held[s].reason for s in ("C001/USDT:USDT", "C003/USDT:USDT", "C005/USDT:USDT")]
    assert reasons[0].startswith("info.bid1Price=true: a bool, not a number")
    assert reasons[1].startswith('info.lastPrice={"value": ') and "a dict" in reasons[1]
    assert reasons[2] == "symbol repeated in one response: 2 rows for one observation"
    repeated = next(row for row in held.values() if row.reason == reasons[2])
    assert [r["lastPrice"] for r in repeated.payload["rows"]][1] == "999999"
    stored = {row.symbol: row for row in await fetch_all(url, tickers)}
    assert len(stored) == count - 3 and not set(stored) & set(held)
    assert all(row.last != 999999 for row in stored.values())
