"""maintain-database end to end on a real PostgreSQL database and a real SQLite file: bloat made
on purpose is measured and removed, retention and upcoming partitions, a collector running
meanwhile loses nothing, and the roles in sql/roles.sql hold."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from prefect.client.orchestration import get_client
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from flows.collect_tickers import collect_tickers
from flows.maintain_database import REPORT_KEY, maintain_database
from perpflow import maintenance
from perpflow.emulator import EmulatorServer, GeneratedVenue
from perpflow.maintenance.report import size_text
from perpflow.normalize import ticker_rows
from perpflow import store
from perpflow.history import BEYOND_VENUE_HORIZON, Coverage, Uncovered
from perpflow.intervals import VENUE, Observation
from perpflow.store import LedgerEntry, create_engine, init_schema, store_batch, tickers
from perpflow.store.completeness import read_certificate, write_certificate
from perpflow.store.partitions import partition_name
from perpflow.store.schema import maintenance_results
from tests.conftest import PG_ADMIN_DSN, ROOT, _create_pg_database, _drop_pg_database
from tests.test_flows import FROZEN_MS, assert_ledger_balanced, configure, fetch_all, perpetuals

pytestmark = pytest.mark.usefixtures("prefect_server")

THRESHOLDS = {
    "PERPFLOW_MAINTENANCE_DEAD_TUPLE_MIN": "100",
    "PERPFLOW_MAINTENANCE_INDEX_MIN_BYTES": "0",
    "PERPFLOW_MAINTENANCE_LOCK_TIMEOUT_SECONDS": "2",
    "PERPFLOW_MAINTENANCE_STATEMENT_TIMEOUT_SECONDS": "120",
    "PERPFLOW_PARTITIONS_AHEAD_DAYS": "2",
}


def _dsn(name: str, user: str = "postgres") -> str:
    return PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgres@", f"{user}@", 1) + f"/{name}"


def _url(name: str, user: str = "postgres") -> str:
    return _dsn(name, user).replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture
async def pg_name():
    """A fresh PostgreSQL database at the head revision; its name."""
    name = await _create_pg_database()
    engine = create_engine(_url(name))
    await init_schema(engine)
    await engine.dispose()
    yield name
    await _drop_pg_database(name)


def _env(monkeypatch, url: str, **extra: str) -> None:
    monkeypatch.setenv("PERPFLOW_DATABASE_URL", url)
    for key, value in {**THRESHOLDS, **extra}.items():
        monkeypatch.setenv(key, value)


async def _bloat_today(dsn: str, rows: int = 20_000) -> str:
    """Fill today's tickers partition, delete 4 rows in 5 (leaving sparse index pages, vacuumed),
    update the rest (dead tuples) and leave an invalid ``*_ccnew`` index; returns the partition."""
    day = datetime.now(UTC).date()
    part = partition_name("tickers", day)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT perpflow_ensure_partition('tickers', current_date)")
        await conn.execute(
            "INSERT INTO tickers (exchange, symbol, ts, ts_source, last, collected_at, "
            "instrument_key, obs_key) "
            "SELECT 'bloat', 'S' || (n % 200) || '/USDT:USDT', "
            "date_trunc('day', now()) + n * interval '1 second', 'exchange', n, now(), n % 200, n "
            "FROM generate_series(1, $1) AS n",
            rows,
        )
        await conn.execute(
            "DELETE FROM tickers WHERE exchange = 'bloat' AND extract(epoch FROM ts)::bigint % 5 <> 0"
        )
        await conn.execute(f"VACUUM ANALYZE {part}")
        await conn.execute("UPDATE tickers SET last = last + 1 WHERE exchange = 'bloat'")
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                f"CREATE UNIQUE INDEX CONCURRENTLY {part}_pkey_ccnew ON {part} (exchange)"
            )
    finally:
        await conn.close()
    return part


async def _report_markdown() -> str:
    """The newest ``maintain-database-report`` artifact's markdown (the API's latest-by-key view)."""
    async with get_client() as client:
        response = await client._client.post(  # the typed client sends null filters 3.8.8 refuses
            "/artifacts/latest/filter",
            json={"artifacts": {"key": {"any_": [REPORT_KEY]}}, "sort": "CREATED_DESC", "limit": 1},
        )
    (artifact,) = response.json()
    return artifact["data"]


async def test_bloat_is_measured_then_removed_on_postgresql(pg_name, monkeypatch):
    part = await _bloat_today(_dsn(pg_name))
    _env(monkeypatch, _url(pg_name))
    engine = create_engine(_url(pg_name))
    try:  # without pgstattuple the index bloat is estimated from the catalog statistics
        snapshot = await maintenance.measure(engine, maintenance.Limits(2, 60))
    finally:
        await engine.dispose()
    estimated = snapshot.by_name()[f"{part}_pkey"]
    assert estimated.bloat_source == "estimate" and estimated.bloat > 0.5, estimated
    conn = await asyncpg.connect(_dsn(pg_name))
    await conn.execute("CREATE EXTENSION pgstattuple")
    await conn.close()

    rows = {row["object"]: row for row in await maintain_database(retention=False)}

    table, pkey, leftover = rows[part], rows[f"{part}_pkey"], rows[f"{part}_pkey_ccnew"]
    assert "vacuum:done" in table["actions"]
    assert table["dead_before"] >= 3000 and table["dead_after"] <= table["dead_before"] // 100
    assert pkey["actions"] == "reindex:done" and pkey["bloat_source"] == "pgstattuple"
    assert pkey["bloat_before"] > 0.5 and pkey["size_after"] < pkey["size_before"] / 2
    assert leftover["actions"] == "reindex:done" and leftover["size_after"] is None
    assert rows["tickers"]["actions"] == "analyze:done"
    assert "reindex" not in (rows[f"{part}_ts_idx"]["actions"] or "")  # BRIN: never "bloated"
    conn = await asyncpg.connect(_dsn(pg_name))
    try:
        assert await conn.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0
    finally:
        await conn.close()
    report = await _report_markdown()
    assert (
        f"| {pkey['object']} | index | {size_text(pkey['size_before'])} | {size_text(pkey['size_after'])} |"
        in report
    )
    assert (
        f"| {part} | table |" in report
        and f"| {table['dead_before']} | {table['dead_after']} |" in report
    )
    engine = create_engine(_url(pg_name))
    try:
        async with engine.connect() as c:
            stored = (
                await c.execute(
                    select(maintenance_results).where(
                        maintenance_results.c.object == pkey["object"]
                    )
                )
            ).one()
    finally:
        await engine.dispose()
    assert (stored.size_before, stored.size_after, stored.actions) == (
        pkey["size_before"],
        pkey["size_after"],
        "reindex:done",
    )


async def test_a_step_meeting_a_lock_times_out_and_is_left_for_the_next_run(pg_name, monkeypatch):
    part = await _bloat_today(_dsn(pg_name), rows=2000)
    _env(monkeypatch, _url(pg_name), PERPFLOW_MAINTENANCE_LOCK_TIMEOUT_SECONDS="0.5")
    holder = await asyncpg.connect(_dsn(pg_name))
    try:
        async with holder.transaction():  # the lock VACUUM needs, held by someone else
            await holder.execute(f"LOCK TABLE {part} IN SHARE UPDATE EXCLUSIVE MODE")
            rows = rows_by(await maintain_database(retention=False, partitions=False))
    finally:
        await holder.close()
    assert "vacuum:timed_out" in rows[part]["actions"]
    assert rows[part]["dead_after"] == rows[part]["dead_before"] >= 100  # not forced
    assert (
        f"- vacuum {part}: timed_out (canceling statement due to lock timeout)"
        in await _report_markdown()
    )

    rows = rows_by(await maintain_database(retention=False, partitions=False))  # the next run
    assert "vacuum:done" in rows[part]["actions"] and rows[part]["dead_after"] == 0


def _entry(run_id: str) -> LedgerEntry:
    now = datetime.now(UTC)
    return LedgerEntry(run_id, "venue", "tickers", "ok", now, now)


async def _store_ticker_at(engine, at: datetime, run_id: str):
    ms = int(at.timestamp() * 1000)
    data = {
        "A/USDT:USDT": {
            "symbol": "A/USDT:USDT",
            "timestamp": ms,
            "bid": 1.0,
            "ask": 2.0,
            "last": 1.5,
        }
    }
    return await store_batch(
        engine, tickers, ticker_rows("venue", data, ["A/USDT:USDT"], ms, run_id), _entry(run_id)
    )


async def _tickers_partitions(engine) -> set[str]:
    async with engine.connect() as conn:
        return set(
            (
                await conn.exec_driver_sql(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'tickers'::regclass"
                )
            ).scalars()
        )


async def test_retention_drops_exactly_expired_partitions_and_creates_upcoming(
    pg_name, monkeypatch
):
    now = datetime.now(UTC)
    engine = create_engine(_url(pg_name))
    try:
        for back in range(7):  # one row on each of the last 7 days (partitions made on demand)
            await _store_ticker_at(engine, now - timedelta(days=back), f"r{back}")
        _env(monkeypatch, _url(pg_name), PERPFLOW_RETENTION_DAYS='{"tickers": 3}')
        present = await _tickers_partitions(engine)
        planned = await maintain_database(dry_run=True)
        assert {r["actions"] for r in planned if r["object"] in present and r["actions"]} == {
            "retention:planned"
        }
        assert await _tickers_partitions(engine) == present  # a dry run changes nothing

        await maintain_database()
        names = await _tickers_partitions(engine)
        async with engine.connect() as conn:
            kept = (await conn.execute(select(func.count()).select_from(tickers))).scalar_one()
        cutoff = now - timedelta(days=3)
        old = {partition_name("tickers", (now - timedelta(days=b)).date()) for b in range(7)}
        expected_kept = {
            n
            for n in old
            if datetime.strptime(n[-8:], "%Y%m%d").replace(tzinfo=UTC) + timedelta(days=1) > cutoff
        }
        upcoming = {partition_name("tickers", (now + timedelta(days=a)).date()) for a in range(3)}
        assert names & old == expected_kept and len(old - expected_kept) >= 3
        assert upcoming <= names
        assert kept == len(expected_kept)
        # A write for a day no one has prepared still lands (its partition is made first).
        far = now + timedelta(days=30)
        assert (await _store_ticker_at(engine, far, "far")).stored == 1
    finally:
        await engine.dispose()


async def test_sqlite_maintenance_vacuums_checks_and_deletes_expired_rows(tmp_path, monkeypatch):
    url = f"sqlite+aiosqlite:///{tmp_path / 'maint.sqlite'}"
    now = datetime.now(UTC)
    engine = create_engine(url)
    try:
        await init_schema(engine)
        symbols = [f"S{i:04d}/USDT:USDT" for i in range(1500)]
        for back in (0, 1, 5, 6):
            at = now - timedelta(days=back)
            ms = int(at.timestamp() * 1000)
            data = {
                s: {"symbol": s, "timestamp": ms, "bid": 1.0, "ask": 2.0, "last": 1.5}
                for s in symbols
            }
            await store_batch(
                engine,
                tickers,
                ticker_rows("venue", data, symbols, ms, f"r{back}"),
                _entry(f"r{back}"),
            )
        async with engine.begin() as conn:  # free pages: delete most rows of a recent day
            await conn.execute(tickers.delete().where(tickers.c.run_id == "r1"))
    finally:
        await engine.dispose()
    _env(
        monkeypatch,
        url,
        PERPFLOW_RETENTION_DAYS='{"tickers": 3}',
        PERPFLOW_MAINTENANCE_SQLITE_DELETE_BATCH="400",
        PERPFLOW_MAINTENANCE_SQLITE_FREE_FRACTION="0.1",
    )

    rows = {row["object"]: row for row in await maintain_database()}

    main = rows["main"]
    assert main["actions"].split("; ") == [
        "integrity:done",
        "vacuum:done",
        "reindex:done",
        "analyze:done",
        "checkpoint:done",
    ]
    assert main["bloat_before"] >= 0.1 and main["bloat_after"] < 0.01, main
    assert main["size_after"] < main["size_before"]
    assert (
        rows["tickers"]["actions"] == "retention:done"
        and rows["tickers"]["detail"] == "3000 rows deleted"
    )
    left = await fetch_all(url, tickers)
    assert {r.run_id for r in left} == {"r0"} and len(left) == len(symbols)


async def test_collector_running_during_maintenance_loses_nothing(pg_name, monkeypatch):
    await _bloat_today(_dsn(pg_name))
    venues = [
        GeneratedVenue(name, symbols=60, now_ms=lambda: FROZEN_MS) for name in ("bybit", "okx")
    ]
    with EmulatorServer(venues).running_in_thread() as server:
        configure(monkeypatch, _url(pg_name), server, ("bybit", "okx"))
        _env(monkeypatch, _url(pg_name))
        maintained, collected = await asyncio.gather(maintain_database(), collect_tickers())
        counts = {name: len(perpetuals(server, name)) for name in ("bybit", "okx")}
    assert {o["status"] for o in collected} == {"ok"}
    assert_ledger_balanced(collected)
    assert {o["exchange"]: o["stored"] for o in collected} == counts
    stored = await fetch_all(_url(pg_name), tickers, tickers.c.exchange.in_(list(counts)))
    assert len(stored) == sum(counts.values())
    assert not [r for r in maintained if r["actions"] and "failed" in r["actions"]]


def rows_by(rows: list[dict]) -> dict[str, dict]:
    return {row["object"]: row for row in rows}


def _psql(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [shutil.which("psql"), _dsn(name), "-q", *args], capture_output=True, text=True, check=False
    )


@pytest.fixture
async def roles_database():
    """A fresh database at head with sql/roles.sql applied under unique role names; the
    database and then the (cluster-wide) roles are dropped afterwards."""
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed")
    name = await _create_pg_database()
    suffix = uuid.uuid4().hex[:8]
    roles = {"collector": f"pf_collector_{suffix}", "maintainer": f"pf_maintainer_{suffix}",
             "reader": f"pf_reader_{suffix}"}
    try:
        engine = create_engine(_url(name))
        await init_schema(engine)
        await engine.dispose()
        done = _psql(
            name,
            "-v",
            f"collector={roles['collector']}",
            "-v",
            "collector_password=unused-here",
            "-v",
            f"maintainer={roles['maintainer']}",
            "-v",
            "maintainer_password=unused-here",
            "-v",
            f"reader={roles['reader']}",
            "-v",
            "reader_password=unused-here",
            "-f",
            str(ROOT / "sql" / "roles.sql"),
        )
        assert done.returncode == 0, done.stderr
        yield name, roles
    finally:
        await _drop_pg_database(name)
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            for role in roles.values():
                await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await conn.close()


async def _sweep_bookkeeping(engine) -> None:
    """What the funding sweep writes besides market data: coverage, interval timeline, and a
    window the venue no longer serves (an unfillable gap)."""
    hour, start = 3_600_000, 1_700_000_000_000 // 3_600_000 * 3_600_000
    proof = Coverage(start, start + 30 * hour, ((start + 10 * hour, start + 30 * hour),),
                     (Uncovered(start, start + 10 * hour - 1, BEYOND_VENUE_HORIZON, "test"),))
    for _ in range(2):  # the second run rewrites what the first wrote
        await store.record_intervals(
            engine, "venue", {"A/USDT:USDT": [Observation(start, 8.0, VENUE)]})
        await store.record_coverage(engine, "venue", {"A/USDT:USDT": [proof]}, "r1")
        await store.record_unreachable(engine, "venue", {"A/USDT:USDT": [proof]}, "r1")


async def _collector_partitions_only_today_and_tomorrow(name, roles, collector) -> None:
    """Today's and tomorrow's (UTC) partitions are opened by the collector's writes; another
    day's only by the maintainer, after which the collector writes there too."""
    now = datetime.now(UTC)
    before = await _tickers_partitions(collector)
    for days in (0, 1):
        assert (await _store_ticker_at(collector, now + timedelta(days=days), f"c{days}")).stored
    for days in (20, -10):
        with pytest.raises(DBAPIError, match="may only open today's or tomorrow's partition"):
            await _store_ticker_at(collector, now + timedelta(days=days), f"c{days}")
    made = await _tickers_partitions(collector) - before
    assert made <= {partition_name("tickers", (now + timedelta(days=d)).date()) for d in (0, 1)}
    conn = await asyncpg.connect(_dsn(name, roles["collector"]))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("SELECT perpflow_ensure_partition('tickers', $1)",
                               (now + timedelta(days=20)).date())
    finally:
        await conn.close()
    conn = await asyncpg.connect(_dsn(name, roles["maintainer"]))
    try:
        for days in (20, -10):
            assert await conn.fetchval("SELECT perpflow_ensure_partition('tickers', $1)",
                                       (now + timedelta(days=days)).date())
    finally:
        await conn.close()
    for days in (20, -10):  # an existing partition takes the collector's rows, whatever its day
        assert (await _store_ticker_at(collector, now + timedelta(days=days), f"c{days}")).stored


async def test_reader_role_reads_and_writes_only_its_results(roles_database):
    name, roles = roles_database
    admin = create_engine(_url(name))
    reader = create_engine(_url(name, roles["reader"]))
    day = datetime.now(UTC).date()
    try:
        assert (await _store_ticker_at(admin, datetime.now(UTC), "r1")).stored == 1
        await init_schema(reader)  # at head: no DDL needed
        assert len(await fetch_all(_url(name, roles["reader"]), tickers)) == 1
        async with reader.connect() as conn:
            for table in ("instruments", "collection_ledger", "funding_history", "funding_gaps",
                          "funding_intervals", "quarantine", "completeness"):
                await conn.execute(select(func.count()).select_from(store.metadata.tables[table]))
        row = {"exchange": "venue", "dataset": "tickers", "day": day, "instruments": 1,
               "expected": 1, "stored": 1, "explained": 0, "unexplained": 0, "reasons": None,
               "detail": None, "certified_at": datetime.now(UTC), "run_id": "c1"}
        for run in ("c1", "c2"):  # certify, then certify again (upsert)
            assert await write_certificate(reader, [{**row, "run_id": run}]) == 1
        assert [r["run_id"] for r in await read_certificate(reader, day)] == ["c2"]
        await store.write_health_snapshot(reader, "h1", [{
            "name": "overall", "status": "OK", "value": None, "unit": None, "detail": "",
            "taken_at": datetime.now(UTC)}])
        await store.write_health_snapshot(reader, "h1", [])  # replaces its run's rows
    finally:
        await reader.dispose()
        await admin.dispose()
    conn = await asyncpg.connect(_dsn(name, roles["reader"]))
    try:
        for statement in (
            "INSERT INTO funding_history (exchange, symbol, funding_ts, funding_rate, "
            "collected_at) VALUES ('v', 'A', now(), 0, now())",
            "INSERT INTO collection_ledger SELECT * FROM collection_ledger",
            "DELETE FROM tickers",
            "DELETE FROM completeness",
            "DELETE FROM collection_ledger",
            "UPDATE instruments SET active = false",
            "UPDATE tickers SET last = 0",
            "TRUNCATE tickers",
            "CREATE TABLE reader_table (x int)",
            "SELECT perpflow_ensure_partition('tickers', current_date + 2)",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
    finally:
        await conn.close()


async def test_collector_role_only_adds_data_and_maintainer_maintains(roles_database, monkeypatch):
    name, roles = roles_database
    collector = create_engine(_url(name, roles["collector"]))
    try:
        await init_schema(collector)  # at head: a collector flow's start needs no DDL
        await _collector_partitions_only_today_and_tomorrow(name, roles, collector)
        await _sweep_bookkeeping(collector)
    finally:
        await collector.dispose()
    await _bloat_today(_dsn(name))
    conn = await asyncpg.connect(_dsn(name, roles["collector"]))
    try:
        for statement in (
            "DROP TABLE tickers",
            "TRUNCATE tickers",
            "TRUNCATE collection_ledger",
            "ALTER TABLE tickers ADD COLUMN x int",
            "DELETE FROM tickers",
            "UPDATE tickers SET last = 0",
            "CREATE INDEX ON funding_history (run_id)",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
    finally:
        await conn.close()
    _env(monkeypatch, _url(name, roles["maintainer"]), PERPFLOW_RETENTION_DAYS='{"tickers": 3}')
    rows = await maintain_database()
    statuses = {
        status
        for r in rows
        if r["actions"]
        for status in (a.split(":")[1] for a in r["actions"].split("; "))
    }
    assert statuses == {"done"}
    steps = {a.split(":")[0] for r in rows if r["actions"] for a in r["actions"].split("; ")}
    assert steps == {"vacuum", "reindex", "analyze", "retention", "partitions"}
    expired = partition_name("tickers", (datetime.now(UTC) - timedelta(days=10)).date())
    assert rows_by(rows)[expired]["actions"] == "retention:done"
