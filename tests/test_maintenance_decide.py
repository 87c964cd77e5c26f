"""The maintenance decision rules on hand-made snapshots (no database): thresholds, what is left
alone, retention boundaries, step switches."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from perpflow.maintenance import STEPS, ObjectStats, Partition, Policy, Snapshot, decide

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
POLICY = Policy(
    dead_tuple_fraction=0.1,
    dead_tuple_min=1000,
    index_bloat_fraction=0.3,
    index_min_bytes=1 << 20,
    sqlite_free_fraction=0.2,
    retention_days={"tickers": 3},
    partitions_ahead_days=1,
    sqlite_delete_batch=100,
)


def _pg(objects, partitions=()) -> Snapshot:
    return Snapshot("postgresql", NOW, list(objects), list(partitions))


def _plan(snapshot, steps=STEPS) -> set[tuple[str, str]]:
    return {(a.step, a.target) for a in decide(snapshot, POLICY, set(steps), NOW)}


def test_thresholds_pick_tables_and_indexes():
    snapshot = _pg(
        [
            ObjectStats("dirty", "table", live_tuples=9000, dead_tuples=1000),
            ObjectStats(
                "few_dead", "table", live_tuples=100, dead_tuples=900
            ),  # share high, count low
            ObjectStats(
                "big_table", "table", live_tuples=10**6, dead_tuples=5000
            ),  # count high, share low
            ObjectStats(
                "bloated", "index", table="dirty", size_bytes=2 << 20, bloat=0.4, method="btree"
            ),
            ObjectStats(
                "small", "index", table="dirty", size_bytes=1 << 19, bloat=0.9, method="btree"
            ),
            ObjectStats(
                "brin", "index", table="dirty", size_bytes=2 << 20, bloat=None, method="brin"
            ),
            ObjectStats(
                "x_pkey_ccnew1", "index", table="dirty", size_bytes=0, valid=False, method="btree"
            ),
            ObjectStats(
                "being_built", "index", table="dirty", size_bytes=0, valid=False, method="btree"
            ),
            ObjectStats("tickers", "partitioned table"),
        ]
    )
    assert _plan(snapshot, {"vacuum", "reindex", "analyze"}) == {
        ("vacuum", "dirty"),
        ("reindex", "bloated"),
        ("reindex", "x_pkey_ccnew1"),
        ("analyze", "tickers"),
    }


def test_retention_takes_whole_days_past_the_cutoff_and_skips_their_upkeep():
    days = [date(2026, 3, d) for d in range(5, 11)]  # cutoff 2026-03-07 12:00: days 5 and 6 go
    partitions = [Partition("tickers", f"tickers_p{d:%Y%m%d}", d, "attached") for d in days]
    partitions += [
        Partition("funding_rates", "funding_rates_p20250101", date(2025, 1, 1), "attached")
    ]
    partitions[0] = Partition("tickers", "tickers_p20260305", days[0], "detaching")
    dirty = ObjectStats("tickers_p20260306", "table", live_tuples=0, dead_tuples=5000)
    actions = decide(_pg([dirty], partitions), POLICY, {"retention", "vacuum"}, NOW)
    assert [(a.step, a.target) for a in actions] == [
        ("retention", "tickers_p20260305"),
        ("retention", "tickers_p20260306"),
    ]
    assert actions[0].statements == (
        'ALTER TABLE "tickers" DETACH PARTITION "tickers_p20260305" FINALIZE',
        'DROP TABLE IF EXISTS "tickers_p20260305"',
    )
    assert "CONCURRENTLY" in actions[1].statements[0]
    # With retention switched off the same partition is looked after like any other table.
    assert _plan(_pg([dirty], partitions), {"vacuum"}) == {("vacuum", "tickers_p20260306")}


def test_upcoming_partitions_are_the_missing_ones():
    present = [Partition("tickers", "tickers_p20260310", date(2026, 3, 10), "attached")]
    assert _plan(_pg([], present), {"partitions"}) == {
        ("partitions", "tickers_p20260311"),
        ("partitions", "funding_rates_p20260310"),
        ("partitions", "funding_rates_p20260311"),
    }


def test_sqlite_vacuums_only_past_the_free_page_threshold():
    def plan(free: float, mode: str = "none"):
        db = ObjectStats("main", "database", size_bytes=1 << 20, bloat=free, method=mode)
        return decide(Snapshot("sqlite", NOW, [db]), POLICY, set(STEPS), NOW)

    assert [a.step for a in plan(0.1)] == [
        "integrity",
        "retention",
        "reindex",
        "analyze",
        "checkpoint",
    ]
    assert [a.statements for a in plan(0.3) if a.step == "vacuum"] == [("VACUUM",)]
    assert [a.statements for a in plan(0.3, "incremental") if a.step == "vacuum"] == [
        ("PRAGMA incremental_vacuum",)
    ]
    (retention,) = [a for a in plan(0.1) if a.step == "retention"]
    assert (retention.target, retention.cutoff) == (
        "tickers",
        datetime(2026, 3, 7, 12, 0, tzinfo=UTC),
    )


def test_unknown_step_is_named():
    with pytest.raises(ValueError, match=r"steps: unknown step\(s\) \['vacum'\]"):
        decide(_pg([]), POLICY, {"vacum"}, NOW)
