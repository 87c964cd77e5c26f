"""funding_coverage and funding_intervals on real SQLite and PostgreSQL: revision 0009 upgrades an
existing database (coverage from stored history, intervals from the instruments) and downgrades
without losing rows; the store's coverage, watermarks, interval history and gap timelines."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text

from perpflow.history import BEYOND_VENUE_HORIZON, FETCH_FAILED, Coverage, Uncovered
from perpflow.intervals import INFERRED, VENUE, IntervalSpan, Observation
from perpflow.normalize import funding_history_rows, instrument_rows, ms_to_datetime
from perpflow.store import (
    create_engine,
    funding_coverage,
    funding_history,
    funding_intervals,
    history_watermarks,
    init_schema,
    instruments,
    metadata,
    read_coverage,
    read_intervals,
    record_coverage,
    record_intervals,
    settlements,
    upsert_instruments,
)
from perpflow.store.migrate import alembic_config
from perpflow.store.partitions import partition_day
from tests.test_migrations import _to

HOUR = 3_600_000
T0 = 1_699_999_200_000
SYMBOLS = ["A/USDT:USDT", "B/USDT:USDT", "C/USDT:USDT"]

# The revision 0009 revises (the schema just before funding coverage and intervals).
BEFORE_0009 = ScriptDirectory.from_config(alembic_config()).get_revision("0009").down_revision


async def _store_history(engine, symbol: str, stamps: list[int], hours: float | None) -> None:
    rows = [{"symbol": symbol, "timestamp": t, "fundingRate": 1e-4} for t in stamps]
    batch = funding_history_rows("venue", symbol, rows, hours, T0, "r0", 0.05)
    # funding_history's columns are the same from revision 0001 on: a plain insert fits the
    # older schema this test starts from (the store writes later revisions' ledger columns).
    async with engine.begin() as conn:
        await conn.execute(funding_history.insert(), batch.rows)


def _markets():
    return {s: {"id": s[:1], "base": s[:1], "quote": "USDT", "settle": "USDT", "linear": True,
                "contractSize": 1.0, "active": True} for s in SYMBOLS}


async def _dump(engine, table):
    async with engine.connect() as conn:
        return sorted(map(tuple, (await conn.execute(select(table))).all()), key=repr)


def _diff(connection):
    def include(name, type_, parent_names) -> bool:
        return not (type_ == "table" and partition_day(name)) and not (
            type_ == "index" and name.endswith("_brin")
        )

    context = MigrationContext.configure(connection, opts={"include_name": include})
    return compare_metadata(context, metadata)


async def test_revision_0009_upgrades_existing_history_and_downgrades_losslessly(
    blank_database_url,
):
    engine = create_engine(blank_database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_to(BEFORE_0009, command.upgrade))
        await upsert_instruments(engine, instrument_rows("venue", _markets(), T0))
        async with engine.begin() as conn:
            await conn.execute(  # where the interval lived before 0009
                text("UPDATE instruments SET funding_interval_hours = 4.0 WHERE symbol = :s"),
                {"s": SYMBOLS[0]},
            )
        stamps = [T0 + k * 4 * HOUR for k in range(6)]
        await _store_history(engine, SYMBOLS[0], stamps, 4.0)
        await _store_history(engine, SYMBOLS[1], stamps[:2], None)
        history_before = await _dump(engine, funding_history)
        instruments_before = await _dump(engine, instruments)

        await init_schema(engine)  # to head: 0009

        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
        assert await read_coverage(engine, "venue") == {
            SYMBOLS[0]: (stamps[0], stamps[-1]),
            SYMBOLS[1]: (stamps[0], stamps[1]),
        }
        assert await read_intervals(engine, "venue") == {
            ("venue", SYMBOLS[0]): [IntervalSpan(T0, None, 4.0, VENUE)]
        }
        marks = await history_watermarks(engine, "venue")
        assert (marks[SYMBOLS[0]].covered_to, marks[SYMBOLS[0]].newest_ms) == (stamps[-1],) * 2
        assert marks[SYMBOLS[0]].hours == 4.0 and marks[SYMBOLS[1]].hours is None
        assert marks[SYMBOLS[2]].covered_to is None
        assert await _dump(engine, funding_history) == history_before

        # The interval changes to 8 h; downgrading puts the interval now in force back.
        eight = Observation(T0 + 99 * HOUR, 8.0, VENUE)
        await record_intervals(engine, "venue", {SYMBOLS[0]: [eight]})
        async with engine.begin() as conn:
            await conn.run_sync(_to(BEFORE_0009, command.downgrade))
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
            hours = dict((await conn.execute(
                text("SELECT symbol, funding_interval_hours FROM instruments"))).all())
        assert "funding_coverage" not in tables and "funding_intervals" not in tables
        assert hours == {SYMBOLS[0]: 8.0, SYMBOLS[1]: None, SYMBOLS[2]: None}
        assert await _dump(engine, funding_history) == history_before
        assert len(await _dump(engine, instruments)) == len(instruments_before)
        await init_schema(engine)
        async with engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()


async def test_coverage_watermarks_intervals_and_gap_timelines(engine):
    await upsert_instruments(engine, instrument_rows("venue", _markets(), T0))
    a, b = SYMBOLS[0], SYMBOLS[1]
    stamps = [T0 + k * 8 * HOUR for k in range(5)]
    stamps += [T0 + 36 * HOUR + k * 4 * HOUR for k in range(4)]
    await _store_history(engine, a, stamps, None)
    end = stamps[-1] + HOUR
    failed = Uncovered(T0 + 60 * HOUR, T0 + 90 * HOUR, FETCH_FAILED, "x")
    stored = await record_coverage(engine, "venue", {
        a: [Coverage(T0, end, ((T0, end),), ())],
        b: [Coverage(T0, T0 + 90 * HOUR, ((T0, T0 + 60 * HOUR - 1),), (failed,))],
    }, "r1")
    assert stored == {a: (T0, end), b: (T0, T0 + 60 * HOUR - 1)}
    # A later run proves more for a; b's older range stays until its hole is fetched.
    horizon = Uncovered(end + 1, end + 10, BEYOND_VENUE_HORIZON, "y")
    stored = await record_coverage(engine, "venue", {
        a: [Coverage(end + 1, end + 100, ((end + 11, end + 100),), (horizon,))],
        b: [Coverage(T0 + 60 * HOUR, T0 + 99 * HOUR, ((T0 + 80 * HOUR, T0 + 99 * HOUR),),
                     (Uncovered(T0 + 60 * HOUR, T0 + 80 * HOUR - 1, FETCH_FAILED, "z"),))],
    }, "r2")
    assert stored == {a: (end + 11, end + 100), b: (T0, T0 + 60 * HOUR - 1)}
    async with engine.connect() as conn:
        query = select(funding_coverage.c.symbol, funding_coverage.c.run_id)
        runs = dict((await conn.execute(query)).all())
    assert runs == {a: "r2", b: "r1"}

    inferred = [Observation(T0, 8.0, INFERRED), Observation(stamps[5], 4.0, INFERRED)]
    changes = await record_intervals(engine, "venue", {a: inferred})
    assert [(c["symbol"], c["old_hours"], c["new_hours"]) for c in changes] == [(a, 8.0, 4.0)]
    assert await record_intervals(engine, "venue", {a: inferred}) == []  # known: no change
    async with engine.connect() as conn:
        query = select(funding_intervals).order_by(funding_intervals.c.valid_from)
        rows = (await conn.execute(query)).all()
    spans = [(r.interval_hours, r.valid_to) for r in rows]
    assert spans == [(8.0, ms_to_datetime(stamps[5])), (4.0, None)]
    marks = await history_watermarks(engine, "venue")
    assert marks[a].hours == 4.0 and marks[a].newest_ms == stamps[-1]

    series = await settlements(engine, ms_to_datetime(T0), ms_to_datetime(end))
    timeline, times = series[("venue", a)]
    assert [span.hours for span in timeline] == [8.0, 4.0] and len(times) == len(stamps)
