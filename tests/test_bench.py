"""run-benchmarks in a reduced size (SQLite and PostgreSQL), its history judgement, the benchmark
CLI, and the pieces the figures rest on. No timed assertions: figures are checked for presence,
units, baselines and flags, never for speed."""

from __future__ import annotations

import json
from pathlib import Path
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from flows.run_benchmarks import run_benchmarks
from perpflow.bench import BenchOptions, Figure
from perpflow.bench.__main__ import main as bench_cli
from perpflow.bench.cycle import request_floor_ms
from perpflow.bench.figures import HIGHER, LOWER, machine
from perpflow.bench.plan import check_benchmarks, check_separate
from perpflow.bench.results import judge
from perpflow.emulator.requestlog import RequestRecord
from perpflow.store import benchmark_results, create_engine, init_schema
from tests.artifacts import run_artifacts
from tests.conftest import scratch_database


pytestmark = pytest.mark.usefixtures("prefect_server")


SMALL = {
    "ingest_rows": 600,
    "batch_rows": 100,
    "query_sizes": [900, 2700],
    "query_repeats": 3,
    "symbols": 10,
    "cycle_venues": [3],
    "latency_ms": 20.0,
}


@pytest.fixture
async def workload_url(database_url, tmp_path):
    """A scratch database of the same dialect as ``database_url``."""
    dialect = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    async with scratch_database(dialect, tmp_path, "bench") as url:
        yield url


async def _stored(url: str, run_id: str | None = None):
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            query = select(benchmark_results)
            if run_id:
                query = query.where(benchmark_results.c.run_id == run_id)
            return {row.name: row for row in (await conn.execute(query)).all()}
    finally:
        await engine.dispose()


async def test_reduced_run_stores_figures_with_baselines_and_artifacts(
    database_url, workload_url, monkeypatch
):
    monkeypatch.setenv("PERPFLOW_DATABASE_URL", database_url)
    monkeypatch.setenv("PERPFLOW_BENCH_DATABASE_URL", workload_url)
    benchmarks = ["ingest", "validation", "cycle", "queries"]
    if database_url.startswith("sqlite"):
        benchmarks.append("memory")  # a fresh worker process: once is enough
    state = await run_benchmarks(benchmarks, **SMALL, return_state=True)
    assert state.is_completed()
    rows = {row["name"]: row for row in await state.result()}
    run_id = str(state.state_details.flow_run_id)
    stored = await _stored(database_url, run_id)
    assert set(stored) == set(rows)

    dialect = "postgresql" if database_url.startswith("postgresql") else "sqlite"
    ingest_ways = (
        {"store", "raw_executemany"}
        if dialect == "sqlite"
        else {
            "raw_copy",
            "store",
            "store_duplicates",
            "store_in_transaction",
            "store_batch",
            "copy_keyed",
            "sqlalchemy_executemany",
            "copy_stage",
            "copy_stage_reused",
            "unnest_on_conflict",
        }
    )
    for way in ingest_ways:
        for label in ("batch100", "bulk600"):
            row = stored[f"ingest.{dialect}.{way}.{label}"]
            assert (
                row.unit == "rows/s" and row.value > 0 and row.db_server.lower().startswith(dialect)
            )
    store = stored[f"ingest.{dialect}.store.batch100"]
    raw = "raw_executemany" if dialect == "sqlite" else "raw_copy"
    assert store.baseline == f"ingest.{dialect}.{raw}.batch100"
    assert store.ratio == pytest.approx(store.value / stored[store.baseline].value)
    assert {"validation.tickers.per_row", "validation.funding_rates.batch100"} <= set(stored)

    wall, floor = stored["cycle.3x10.wall"], stored["cycle.3x10.floor"]
    assert wall.baseline == "cycle.3x10.floor" and floor.value >= 2 * 20.0  # markets + tickers
    assert stored["cycle.3x10.overhead"].value == pytest.approx(wall.value - floor.value)

    for size in ("900", "2700"):
        for read in ("latest_per_symbol", "symbol_last_24h", "funding_daily_30d"):
            p50, p99 = (stored[f"queries.{dialect}.{read}.{size}.p{q}"].value for q in (50, 99))
            assert 0 < p50 <= p99
        assert stored[f"queries.{dialect}.latest_per_symbol.{size}.p95"].budget == 50.0
    if dialect == "sqlite":
        assert (
            stored["memory.worker.rss"].budget == 400.0 and stored["memory.worker.rss"].value > 50
        )
    assert all(row.cores >= 1 and row.memory_bytes > 0 and row.python for row in stored.values())
    assert not any(row.regression for row in stored.values())  # nothing earlier to regress from

    by_key = await run_artifacts(state.state_details.flow_run_id)
    assert {"run-benchmarks-results", "run-benchmarks-summary", "run-benchmarks-progress"} <= set(
        by_key
    )
    assert by_key["run-benchmarks-progress"].data == 100.0
    assert len(json.loads(by_key["run-benchmarks-results"].data)) == len(rows)


async def test_a_previous_much_faster_run_flags_a_regression(tmp_path, monkeypatch):
    url = f"sqlite+aiosqlite:///{tmp_path / 'market.sqlite'}"
    monkeypatch.setenv("PERPFLOW_DATABASE_URL", url)
    monkeypatch.setenv(
        "PERPFLOW_BENCH_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'bench.sqlite'}"
    )
    engine = create_engine(url)
    await init_schema(engine)
    here = machine("SQLite")
    earlier = {
        "name": "ingest.sqlite.store.batch100",
        "value": 1e9,
        "unit": "rows/s",
        "better": HIGHER,
        "baseline": "ingest.sqlite.raw_executemany.batch100",
        "ratio": 100.0,
        "budget": None,
        "regression": False,
        "note": "",
        "cores": here.cores,
        "memory_bytes": here.memory_bytes,
        "python": here.python,
        "db_server": "SQLite",
    }
    async with engine.begin() as conn:
        await conn.execute(
            benchmark_results.insert(),
            [{**earlier, "run_id": "earlier", "recorded_at": datetime.now(UTC)}],
        )
    await engine.dispose()

    rows = await run_benchmarks(["ingest"], **SMALL, regression_margin=0.5)
    verdicts = {row["name"]: row for row in rows}
    flagged = verdicts["ingest.sqlite.store.batch100"]
    assert flagged["status"] == "regression" and flagged["previous"] == 100.0
    assert flagged["change_pct"] < -50
    assert verdicts["ingest.sqlite.store.bulk600"]["status"] == "new"
    assert verdicts["ingest.sqlite.raw_executemany.batch100"]["status"] == "yardstick"
    stored = await _stored(url)
    assert {name for name, row in stored.items() if row.regression} == {
        "ingest.sqlite.store.batch100"
    }


def test_cli_runs_standalone_benchmarks_and_refuses_flow_ones(tmp_path, capsys):
    out = tmp_path / "figures.json"
    market = f"sqlite+aiosqlite:///{tmp_path / 'market.sqlite'}"
    args = [
        "--database",
        f"sqlite+aiosqlite:///{tmp_path / 'bench.sqlite'}",
        "--results-database",
        market,
        "--benchmarks",
        "validation,queries",
        "--sizes",
        "300",
        "--repeats",
        "2",
        "--symbols",
        "5",
        "--output",
        str(out),
    ]
    assert bench_cli(args) == 0
    names = {row["name"] for row in json.loads(out.read_text())}
    assert (
        "queries.sqlite.latest_per_symbol.300.p95" in names
        and "validation.tickers.per_row" in names
    )
    assert "queries.sqlite.symbol_last_24h.300.p99" in capsys.readouterr().out
    assert bench_cli(args[:4] + ["--benchmarks", "cycle"]) == 2
    assert "use python -m flows.run_benchmarks" in capsys.readouterr().err
    assert bench_cli(["--database", market, "--results-database", market]) == 2


def test_request_floor_is_the_slowest_venue_union_of_request_intervals():
    def rec(venue, start, ms):
        return RequestRecord(venue, "GET", "/x", {}, 200, start, 0, ms)

    records = [
        rec("a", 10.0, 100),
        rec("a", 10.05, 100),
        rec("a", 11.0, 100),  # 150 + 100 ms
        rec("b", 10.0, 200),
    ]
    assert request_floor_ms(records) == pytest.approx(250.0)
    assert request_floor_ms([]) == 0.0


def test_judge_compares_ratios_in_the_right_direction():
    faster = Figure("x", 10.0, "rows/s", HIGHER, baseline="raw", ratio=0.5)
    slower_query = Figure("q", 30.0, "ms", LOWER)
    verdicts = judge([faster, slower_query], {"x": [0.9, 0.8, 1.0], "q": [10.0]}, 0.25)
    assert [v.regression for v in verdicts] == [True, True]
    assert verdicts[0].reference == 0.9 and verdicts[1].change == pytest.approx(-2.0)
    assert not judge([faster], {"x": [0.6]}, 0.25)[0].regression
    raw = Figure("raw", 1.0, "rows/s", HIGHER, yardstick=True)
    assert judge([raw], {"raw": [100.0]}, 0.25)[0].status == "yardstick"
    assert Figure("m", 500.0, "MB", LOWER, budget=400.0).over_budget
    with pytest.raises(ValueError, match="regression_margin"):
        judge([faster], {}, 1.5)


def test_bad_benchmark_options_name_the_field():
    with pytest.raises(ValueError, match="benchmarks=.*'nope'"):
        check_benchmarks(["ingest", "nope"])
    with pytest.raises(ValueError, match="query_sizes"):
        BenchOptions("sqlite+aiosqlite:///x.sqlite", query_sizes=(10, 5))
    with pytest.raises(ValueError, match="bench_database_url"):
        check_separate("sqlite+aiosqlite:///a.sqlite", "sqlite+aiosqlite:///a.sqlite")
    same = [  # one database, spelled differently: refused every time
        ("sqlite+aiosqlite:///a.sqlite", f"sqlite+aiosqlite:///{Path('a.sqlite').resolve()}"),
        (
            "postgresql+asyncpg://bench@localhost/market",
            "postgresql+asyncpg://postgres:pw@127.0.0.1:5432/market?ssl=disable",
        ),
    ]
    for workload, market in same:
        with pytest.raises(ValueError, match="bench_database_url"):
            check_separate(workload, market)
    check_separate(
        "postgresql+asyncpg://postgres@127.0.0.1/perpflow_bench",
        "postgresql+asyncpg://postgres@127.0.0.1/market",
    )
