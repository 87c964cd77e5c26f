"""sweep-funding-rates against venues whose funding-history endpoint loses data when paged
naively (emulator quirks over HTTP, real SQLite file): every settlement the venue served in the
lookback is stored, or lies in a gap recorded with its reason; the ledger balances; intervals are
learned, changes included, and produce no false gaps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flows.sweep_funding_rates import sweep_funding_rates
from perpflow.backfill import find_gaps
from perpflow.emulator import EmulatorServer, GeneratedVenue
from perpflow.emulator.quirks import Quirks
from perpflow.store import create_engine, funding_gaps, funding_history, read_intervals, settlements
from tests.test_flows import FROZEN_MS, assert_ledger_balanced, configure, fetch_all, perpetuals

pytestmark = pytest.mark.usefixtures("prefect_server")

HOUR_MS = 3_600_000
LOOKBACK_DAYS = 3
CHANGE_AT = (FROZEN_MS - 2 * 86_400_000) // (8 * HOUR_MS) * (8 * HOUR_MS)  # inside the backfill


async def sweep(tmp_path, monkeypatch, venue: GeneratedVenue):
    url = f"sqlite+aiosqlite:///{tmp_path / 'history.sqlite'}"
    with EmulatorServer([venue]).running_in_thread() as server:
        configure(monkeypatch, url, server, [venue.name])
        monkeypatch.setenv("PERPFLOW_FUNDING_HISTORY_LOOKBACK_DAYS", str(LOOKBACK_DAYS))
        outcomes = await sweep_funding_rates()
        symbols = perpetuals(server, venue.name)
    assert_ledger_balanced(outcomes)
    return url, outcomes, symbols


async def assert_every_settlement_accounted(url, venue: GeneratedVenue, symbols) -> dict:
    """Every expected settlement in the lookback is stored with the venue's rate or inside an
    unfillable gap whose detail gives the reason; nothing else is stored. Returns
    ``{symbol: number of settlements explained by gaps}``."""
    start = FROZEN_MS - LOOKBACK_DAYS * 86_400_000
    stored: dict[str, dict[int, float]] = {}
    for row in await fetch_all(url, funding_history):
        stored.setdefault(row.symbol, {})[int(row.funding_ts.timestamp() * 1000)] = row.funding_rate
    gaps = [g for g in await fetch_all(url, funding_gaps) if g.status == "unfillable"]
    explained = {}
    for symbol in symbols:
        expected = {ms: rate for _, ms, rate in venue.expected_settlements(symbol, start, FROZEN_MS)}
        mine = [g for g in gaps if g.symbol == symbol]
        assert all(g.detail and g.detail.split(":")[0] in ("beyond_venue_horizon",
                                                            "venue_unsupported") for g in mine)
        in_gap = {ms for ms in expected
                  if any(g.gap_from.timestamp() * 1000 <= ms <= g.gap_to.timestamp() * 1000
                         for g in mine)}
        got = stored.get(symbol, {})
        for ms, rate in expected.items():
            assert ms in got or ms in in_gap, (symbol, ms)
            if ms in got:
                assert got[ms] == pytest.approx(rate), (symbol, ms)
        assert set(got) - set(expected) <= {ms for ms in got if ms < start}, symbol
        explained[symbol] = len(in_gap - set(got))
    return explained


@pytest.mark.parametrize(
    ("name", "quirks"),
    [
        ("binanceusdm", Quirks(history_newest_first=True, history_page_cap=25)),
        ("okx", Quirks(history_page_cap=25, history_ignores_until=True)),
        ("bybit", Quirks(history_page_cap=25)),
        ("binanceusdm", Quirks(history_ignores_since=True, history_page_cap=25)),
    ],
    ids=["newest-first-cap25", "until-ignored-cap25", "cap25", "since-ignored-cap25"],
)
async def test_capped_reordered_or_unbounded_pages_lose_nothing(tmp_path, monkeypatch, name, quirks):
    venue = GeneratedVenue(name, symbols=6, seed=9, now_ms=lambda: FROZEN_MS, quirks=quirks)
    url, outcomes, symbols = await sweep(tmp_path, monkeypatch, venue)
    assert {o["status"] for o in outcomes} == {"ok"}
    explained = await assert_every_settlement_accounted(url, venue, symbols)
    assert sum(explained.values()) == 0  # everything reachable was stored


async def test_a_venue_serving_only_its_newest_page_is_detected_and_the_rest_explained(
    tmp_path, monkeypatch
):
    # Both bounds ignored: whatever is asked, the newest 25 settlements; older ones are unreachable.
    quirks = Quirks(history_ignores_since=True, history_ignores_until=True, history_page_cap=25,
                    intervals=(("ETH/USDT:USDT", 1),))  # 72 hourly settlements in the lookback
    venue = GeneratedVenue("binanceusdm", symbols=6, seed=9, now_ms=lambda: FROZEN_MS, quirks=quirks)
    url, outcomes, symbols = await sweep(tmp_path, monkeypatch, venue)
    explained = await assert_every_settlement_accounted(url, venue, symbols)
    assert explained["ETH/USDT:USDT"] == 72 - 25  # older than the newest page: recorded, not dropped
    gaps = await fetch_all(url, funding_gaps)
    assert {g.detail.split(":")[0] for g in gaps} == {"beyond_venue_horizon"}


async def test_hourly_and_4h_symbols_and_an_interval_change_inside_the_backfill(
    tmp_path, monkeypatch
):
    quirks = Quirks(
        intervals=(("ETH/USDT:USDT", 1), (2, 4)),
        interval_changes=(("BTC/USDT:USDT", CHANGE_AT, 4),),
    )
    venue = GeneratedVenue("bybit", symbols=6, seed=9, now_ms=lambda: FROZEN_MS, quirks=quirks)
    url, outcomes, symbols = await sweep(tmp_path, monkeypatch, venue)
    assert {o["status"] for o in outcomes} == {"ok"}
    explained = await assert_every_settlement_accounted(url, venue, symbols)
    assert sum(explained.values()) == 0
    engine = create_engine(url)
    try:
        timelines = await read_intervals(engine, "bybit")
        since = datetime.fromtimestamp((FROZEN_MS - LOOKBACK_DAYS * 86_400_000) / 1000, UTC)
        found = await settlements(engine, since, since + timedelta(days=LOOKBACK_DAYS + 1))
    finally:
        await engine.dispose()
    btc = timelines[("bybit", "BTC/USDT:USDT")]
    assert [span.hours for span in btc][-2:] == [8.0, 4.0]
    assert btc[-1].valid_from == CHANGE_AT + 4 * HOUR_MS  # the first settlement at 4 h
    assert timelines[("bybit", "ETH/USDT:USDT")][-1].hours == 1.0
    for (exchange, symbol), (timeline, stamps) in found.items():
        assert find_gaps(exchange, symbol, stamps, timeline) == [], symbol  # no false gaps
