"""check-data-quality end to end: clean emulator data passes every suite; each injected defect
fails exactly its expectation and the reports name it; gaps go to the funding sweep's backfill.

One collected dataset per dialect (module scope): the tests run in file order on it, each adding
its own defects; every check runs over a window that covers the whole dataset.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from sqlalchemy import delete, insert, update

from flows.check_data_quality import DataQualityFailed, check_data_quality
from flows.collect_tickers import collect_tickers
from flows.sweep_funding_rates import sweep_funding_rates
from perpflow.backfill import find_gaps, gap_requests
from perpflow.emulator import EmulatorServer, GeneratedVenue
from perpflow.quality import QualityWindow
from perpflow.store import create_engine, funding_gaps, funding_history, quality_results, tickers
from perpflow.store.partitions import ensure_partitions
from tests.artifacts import run_artifacts, table
from tests.conftest import scratch_database
from tests.test_flows import configure, fetch_all, perpetuals

pytestmark = pytest.mark.usefixtures("prefect_server")

# Venue names of this module: a cached market list (keyed by venue config) is not shared
# with another module's emulator that happened to get the same port.
BINANCE, BYBIT, OKX = "binanceusdm-dq", "bybit-dq", "okx-dq"
VENUES = (BINANCE, BYBIT, OKX)
DAY = timedelta(days=1)
EXPECTATIONS = {
    "coverage.funding_rates",
    "coverage.tickers",
    "funding_history.continuity",
    "funding_history.exchange_not_null",
    "funding_history.funding_rate_within_bound",
    "funding_history.funding_ts_not_in_future",
    "funding_history.funding_ts_not_null",
    "funding_history.key_unique",
    "funding_history.symbol_not_null",
    "funding_rates.exchange_not_null",
    "funding_rates.funding_rate_within_bound",
    "funding_rates.index_price_positive",
    "funding_rates.key_unique",
    "funding_rates.mark_price_positive",
    "funding_rates.mark_within_band_of_index",
    "funding_rates.next_funding_rate_within_bound",
    "funding_rates.symbol_not_null",
    "funding_rates.ts_not_in_future",
    "funding_rates.ts_not_null",
    "funding_rates.ts_not_stale",
    "tickers.ask_positive",
    "tickers.bid_le_ask",
    "tickers.bid_positive",
    "tickers.exchange_not_null",
    "tickers.index_price_positive",
    "tickers.key_unique",
    "tickers.last_positive",
    "tickers.mark_price_positive",
    "tickers.mark_within_band_of_index",
    "tickers.symbol_not_null",
    "tickers.ts_not_in_future",
    "tickers.ts_not_null",
    "tickers.ts_not_stale",
}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def collected(request, tmp_path_factory):
    """Three emulated venues x 12 perpetuals, listed 6 days ago, collected once (tickers,
    funding rates, 6 days of realized funding) into a fresh database; yields (url, server)."""
    tmp = tmp_path_factory.mktemp(f"quality-{request.param}")
    listed = int((datetime.now(UTC) - 6 * DAY).timestamp() * 1000) // 86_400_000 * 86_400_000
    venues = [
        GeneratedVenue(v, v.split("-")[0], symbols=12, seed=5, listed_ms=listed) for v in VENUES
    ]
    async with scratch_database(request.param, tmp, "market") as url:
        with (
            pytest.MonkeyPatch.context() as patch,
            EmulatorServer(venues).running_in_thread() as server,
        ):
            configure(patch, url, server, VENUES)
            patch.setenv("PERPFLOW_QUALITY_DIR", str(tmp / "quality"))
            await collect_tickers()
            await sweep_funding_rates()
            yield url, server, tmp / "quality"


async def _check(url: str):
    """Run check-data-quality over a window covering everything; returns (state, rows by key,
    artifacts by key)."""
    now = datetime.now(UTC)
    state = await check_data_quality(
        start=now - 8 * DAY, end=now + timedelta(hours=1), return_state=True
    )
    artifacts = await run_artifacts(state.state_details.flow_run_id)
    rows = {row["expectation"]: row for row in table(artifacts["data-quality-results"])}
    return state, rows, artifacts


def _file(url: str) -> Path:
    assert url.startswith("file://"), url
    return Path(unquote(urlparse(url).path))


async def _execute(url: str, *statements) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            # Moved timestamps may land on days with no PostgreSQL partition yet.
            days = {datetime.now(UTC).date() + timedelta(days=d) for d in (-1, 0, 1)}
            await ensure_partitions(conn, "tickers", days)
            for statement in statements:
                await conn.execute(statement)
    finally:
        await engine.dispose()


def _key(table_, row):
    return [table_.c[c.name] == getattr(row, c.name) for c in table_.primary_key.columns]


async def test_clean_data_passes_every_suite_and_links_resolve(collected):
    url, server, quality_dir = collected
    state, rows, artifacts = await _check(url)
    assert state.is_completed(), state.message
    assert set(rows) == EXPECTATIONS
    assert [key for key, row in rows.items() if not row["success"]] == []
    count = sum(len(perpetuals(server, venue)) for venue in VENUES)
    assert rows["tickers.bid_le_ask"]["element_count"] == count
    assert rows["funding_history.continuity"]["element_count"] > count * 6
    stored = await fetch_all(
        url, quality_results, quality_results.c.run_id == str(state.state_details.flow_run_id)
    )
    assert {row.expectation for row in stored} == EXPECTATIONS and all(
        row.success for row in stored
    )

    link = re.search(r"\((file://[^)]+)\)", artifacts["data-quality-docs"].data).group(1)
    index = _file(link)
    assert index.is_file() and index.is_relative_to(quality_dir)
    pages = {row["docs"] for row in rows.values()}
    assert len(pages) == 5 and all(_file(page).is_file() for page in pages)
    assert str(state.state_details.flow_run_id) in next(iter(pages))  # results named by the run
    progress = artifacts["data-quality-progress"]
    assert (progress.type, progress.data) == ("progress", 100.0)


async def test_each_defect_fails_exactly_its_expectation_and_is_named(collected):
    url, server, _ = collected
    rows = {(r.exchange, r.symbol): r for r in await fetch_all(url, tickers)}
    crossed = rows[(BINANCE, "C001/USDT:USDT")]
    negative = rows[(BYBIT, "C002/USDT:USDT")]
    future = rows[(OKX, "C003/USDT:USDT")]
    stale = rows[(BINANCE, "C004/USDT:USDT")]
    okx = sorted(s for (v, s) in rows if v == OKX and s != future.symbol)
    half = okx[: (len(okx) + 1) // 2]  # half of okx's instruments lose their tickers
    history = sorted(
        (
            r
            for r in await fetch_all(url, funding_history)
            if (r.exchange, r.symbol) == (BYBIT, "ETH/USDT:USDT")
        ),
        key=lambda r: r.funding_ts,
    )
    missing = history[len(history) // 2]
    await _execute(
        url,
        update(tickers).where(*_key(tickers, crossed)).values(bid=crossed.ask * 1.01),
        update(tickers).where(*_key(tickers, negative)).values(last=-negative.last),
        update(tickers)
        .where(*_key(tickers, future))
        .values(ts=future.collected_at + timedelta(hours=1)),
        update(tickers).where(*_key(tickers, stale)).values(ts=stale.collected_at - DAY),
        delete(tickers).where(tickers.c.exchange == OKX, tickers.c.symbol.in_(half)),
        delete(funding_history).where(*_key(funding_history, missing)),
    )

    state, rows, artifacts = await _check(url)
    failed = {key for key, row in rows.items() if not row["success"]}
    named = {
        "tickers.bid_le_ask": (BINANCE, "C001/USDT:USDT"),
        "tickers.last_positive": (BYBIT, "C002/USDT:USDT"),
        "tickers.ts_not_in_future": (OKX, "C003/USDT:USDT"),
        "tickers.ts_not_stale": (BINANCE, "C004/USDT:USDT"),
        "funding_history.continuity": (BYBIT, "ETH/USDT:USDT"),
    }
    assert failed == set(named) | {"coverage.tickers"}
    for key, (venue, symbol) in named.items():
        (example,) = json.loads(rows[key]["examples"])
        assert (rows[key]["unexpected_count"], example["exchange"], example["symbol"]) == (
            1,
            venue,
            symbol,
        )
    (coverage,) = json.loads(rows["coverage.tickers"]["examples"])
    assert coverage == {
        "exchange": OKX,
        "tickers_coverage": pytest.approx(1 - len(half) / (len(okx) + 1)),
    }
    assert state.is_failed()
    with pytest.raises(DataQualityFailed) as raised:
        await state.result()
    assert all(key in str(raised.value) for key in failed)

    interval = missing.funding_ts - history[len(history) // 2 - 1].funding_ts
    (gap,) = table(artifacts["data-quality-funding-gaps"])
    assert gap == {
        "exchange": BYBIT,
        "symbol": "ETH/USDT:USDT",
        "from": missing.funding_ts.isoformat(),
        "to": missing.funding_ts.isoformat(),
        "missing": 1,
        "interval_hours": interval / timedelta(hours=1),
        "status": "open",
        "detail": "",
    }
    stored = await fetch_all(
        url, quality_results, quality_results.c.run_id == str(state.state_details.flow_run_id)
    )
    assert {row.expectation for row in stored if not row.success} == failed


async def test_gaps_are_backfilled_or_reported_unfillable(collected):
    url, server, _ = collected
    history = sorted(
        (
            r
            for r in await fetch_all(url, funding_history)
            if (r.exchange, r.symbol) == (OKX, "BTC/USDT:USDT")
        ),
        key=lambda r: r.funding_ts,
    )
    step = history[1].funding_ts - history[0].funding_ts
    missing = history[3]
    before_listing = history[0].funding_ts - 4 * step  # the venue serves nothing before its listing
    await _execute(
        url,
        delete(funding_history).where(*_key(funding_history, missing)),
        insert(funding_history).values(
            exchange=OKX,
            symbol="BTC/USDT:USDT",
            funding_ts=before_listing,
            funding_rate=0.0001,
            interval_hours=step / timedelta(hours=1),
            collected_at=history[0].collected_at,
        ),
    )
    state, rows, artifacts = await _check(url)
    found = {
        (g["symbol"], g["from"], g["status"])
        for g in table(artifacts["data-quality-funding-gaps"])
        if g["exchange"] == OKX
    }
    assert found == {
        ("BTC/USDT:USDT", missing.funding_ts.isoformat(), "open"),
        ("BTC/USDT:USDT", (before_listing + step).isoformat(), "open"),
    }

    sweep = await sweep_funding_rates(return_state=True)
    assert sweep.is_completed()
    swept = await run_artifacts(sweep.state_details.flow_run_id)
    resolved = {(g["exchange"], g["gap_from"]): g for g in table(swept["sweep-funding-rates-gaps"])}
    assert swept["sweep-funding-rates-backfill"].data == 100.0
    gaps = {(g.exchange, g.symbol, g.gap_from): g for g in await fetch_all(url, funding_gaps)}
    assert gaps[(OKX, "BTC/USDT:USDT", missing.funding_ts)].status == "filled"
    unfillable = gaps[(OKX, "BTC/USDT:USDT", before_listing + step)]
    assert (unfillable.status, unfillable.missing, unfillable.detail) == (
        "unfillable",
        3,
        "venue served 0 of 3 missing settlement(s)",
    )
    assert (OKX, missing.funding_ts.isoformat()) in resolved
    assert resolved[(OKX, (before_listing + step).isoformat())]["status"] == "unfillable"
    refetched = await fetch_all(url, funding_history, *_key(funding_history, missing))
    assert len(refetched) == 1

    state, rows, artifacts = await _check(url)
    reported = [g for g in table(artifacts["data-quality-funding-gaps"]) if g["exchange"] == OKX]
    assert [(g["from"], g["status"]) for g in reported] == [
        ((before_listing + step).isoformat(), "unfillable")
    ]
    examples = json.loads(rows["funding_history.continuity"]["examples"])
    assert [(e["exchange"], e["symbol"], e["funding_ts"]) for e in examples] == [
        (OKX, "BTC/USDT:USDT", history[0].funding_ts.isoformat())
    ]


def test_gaps_are_the_missing_settlements_between_stored_ones():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    hours = timedelta(hours=4)
    stamps = [
        t0,
        t0 + hours,
        t0 + 4 * hours,
        t0 + 5 * hours + timedelta(minutes=30),
        t0 + 8 * hours,
    ]
    (first, second) = find_gaps(OKX, "ETH/USDT:USDT", stamps, 4.0)
    assert (first.gap_from, first.gap_to, first.missing) == (t0 + 2 * hours, t0 + 3 * hours, 2)
    assert (second.gap_from, second.gap_to, second.missing) == (
        stamps[3] + hours,
        stamps[3] + 2 * hours,
        2,
    )
    assert find_gaps(OKX, "ETH/USDT:USDT", stamps[:2], 4.0) == []
    (request,) = gap_requests([first])
    assert (request.since_ms, request.until_ms, request.interval_ms) == (
        int(first.gap_from.timestamp() * 1000),
        int(first.gap_to.timestamp() * 1000),
        4 * 3_600_000,
    )


def test_a_bad_window_is_refused_naming_the_field():
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="start='2026-01-01T00:00:00': expected a timezone-aware"):
        QualityWindow(datetime(2026, 1, 1), now)
    with pytest.raises(ValueError, match="start=.*must be before end="):
        QualityWindow(now, now - DAY)
