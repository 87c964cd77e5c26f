"""Funding intervals as data: inference from settlement times (1 h, 4 h, 8 h, a change inside the
window), the timeline with history, gap detection by the interval in force (no false gaps at a
change, no assumed 8 h), and the history batch that isolates a failed symbol."""

from __future__ import annotations

from datetime import timedelta

import pytest

from perpflow.backfill import HistoryRequest, Watermark, find_gaps, gap_requests, plan_history
from perpflow.history import Coverage, FundingHistory, failed_history, history_batch
from perpflow.intervals import (
    INFERRED,
    VENUE,
    IntervalSpan,
    Observation,
    apply_observations,
    hours_at,
    infer_intervals,
)
from perpflow.normalize import ms_to_datetime

HOUR = 3_600_000
T0 = 1_699_999_200_000  # a multiple of 8 h


def series(count: int, hours: float, start: int = T0) -> list[int]:
    return [start + int(k * hours * HOUR) for k in range(count)]


@pytest.mark.parametrize("hours", [1.0, 4.0, 8.0])
def test_a_regular_series_infers_its_interval_from_the_first_settlement(hours):
    stamps = series(12, hours)
    assert infer_intervals(stamps) == [Observation(T0, hours, INFERRED)]
    # Known already: nothing new; missing settlements do not change it.
    known = [IntervalSpan(T0, None, hours, VENUE)]
    assert infer_intervals(stamps[:3] + stamps[5:], known) == []


def test_a_change_inside_the_window_is_recorded_from_the_first_settlement_at_the_new_spacing():
    before = series(10, 8.0)
    after = series(12, 4.0, start=before[-1] + 4 * HOUR)
    found = infer_intervals(before + after)
    assert found == [Observation(T0, 8.0, INFERRED), Observation(after[0], 4.0, INFERRED)]
    timeline, changes = apply_observations([], found)
    assert timeline == [
        IntervalSpan(T0, after[0], 8.0, INFERRED),
        IntervalSpan(after[0], None, 4.0, INFERRED),
    ]
    assert [(c.at, c.old_hours, c.new_hours) for c in changes] == [(after[0], 8.0, 4.0)]
    assert hours_at(timeline, after[0] - 1) == 8.0 and hours_at(timeline, after[0]) == 4.0


def test_longer_spacing_needs_a_run_before_it_counts_as_a_change():
    stamps = series(10, 4.0)
    one_missing = stamps[:5] + stamps[6:]  # one 8 h step: a missing settlement, not a change
    assert infer_intervals(one_missing) == [Observation(T0, 4.0, INFERRED)]
    longer = stamps + series(4, 8.0, start=stamps[-1] + 8 * HOUR)
    assert infer_intervals(longer)[-1] == Observation(stamps[-1] + 8 * HOUR, 8.0, INFERRED)


def test_settlements_outrank_a_venue_statement_and_venue_changes_are_recorded():
    inferred = [IntervalSpan(T0, None, 4.0, INFERRED)]
    assert apply_observations(inferred, [Observation(T0 + HOUR, 8.0, VENUE)]) == (inferred, [])
    stated = [IntervalSpan(T0, None, 8.0, VENUE)]
    timeline, (change,) = apply_observations(stated, [Observation(T0 + 9 * HOUR, 1.0, VENUE)])
    assert timeline[-1] == IntervalSpan(T0 + 9 * HOUR, None, 1.0, VENUE)
    assert (change.old_hours, change.new_hours) == (8.0, 1.0)
    # An earlier first settlement at the same interval moves the span back, no change.
    later = [IntervalSpan(T0 + 9 * HOUR, None, 1.0, VENUE)]
    earlier, none = apply_observations(later, [Observation(T0 + 5 * HOUR, 1.0, INFERRED)])
    assert earlier == [IntervalSpan(T0 + 5 * HOUR, None, 1.0, VENUE)] and none == []


def as_times(stamps):
    return [ms_to_datetime(t) for t in stamps]


def test_gaps_use_the_interval_in_force_so_a_change_makes_no_false_gap():
    before = series(10, 8.0)
    after = series(12, 4.0, start=before[-1] + 4 * HOUR)
    stamps = before + after
    timeline, _ = apply_observations([], infer_intervals(stamps))
    assert find_gaps("v", "S", as_times(stamps), timeline) == []
    # One interval for all (the old way) would have called every 8 h step a gap.
    assert find_gaps("v", "S", as_times(stamps), [IntervalSpan(0, None, 4.0, VENUE)])
    # Real gaps on both sides of the change are found at their own interval.
    holed = before[:3] + before[4:] + after[:5] + after[7:]
    gaps = find_gaps("v", "S", as_times(holed), timeline)
    assert [(g.gap_from, g.missing, g.interval_hours) for g in gaps] == [
        (ms_to_datetime(before[3]), 1, 8.0),
        (ms_to_datetime(after[5]), 2, 4.0),
    ]


def test_without_a_known_interval_gaps_use_the_inferred_spacing_never_8h():
    stamps = series(24, 1.0)
    holed = stamps[:10] + stamps[13:]
    (gap,) = find_gaps("v", "S", as_times(holed), None)
    assert (gap.interval_hours, gap.missing) == (1.0, 3)
    assert gap.gap_to - gap.gap_from == timedelta(hours=2)
    assert find_gaps("v", "S", as_times(stamps[:1]), None) == []
    (request,) = gap_requests([gap])
    assert (request.since_ms, request.anchor_ms) == (stamps[10], stamps[9])


def test_plan_starts_from_proven_coverage_and_pages_by_time_when_the_interval_is_unknown():
    now, lookback = T0 + 100 * HOUR, 48 * HOUR
    marks = {
        "RECENT": Watermark(T0, now - HOUR, now - 2 * HOUR, 8.0),
        "SHORT": Watermark(T0, T0 + 10 * HOUR, T0 + 8 * HOUR, 8.0),
        "UNKNOWN": Watermark(T0, now - HOUR, now - 2 * HOUR, None),
    }
    plan = plan_history(["NEW", "RECENT", "SHORT", "UNKNOWN"], marks, now, lookback)
    assert [(p.symbol, p.since_ms, p.anchor_ms, p.interval_ms) for p in plan] == [
        ("NEW", now - lookback, None, None),
        ("SHORT", T0 + 10 * HOUR + 1, T0 + 8 * HOUR, 8 * HOUR),
        ("UNKNOWN", now - HOUR + 1, now - 2 * HOUR, None),
    ]


def test_history_batch_isolates_a_failed_symbol_and_stores_intervals_in_force():
    stamps = series(10, 8.0) + series(6, 4.0, start=T0 + 9 * 8 * HOUR + 4 * HOUR)
    rows = [{"symbol": "A", "timestamp": t, "fundingRate": 1e-4} for t in stamps]
    ok = FundingHistory("A", rows, Coverage(T0, stamps[-1], ((T0, stamps[-1]),), ()))
    bad = failed_history("B", T0, stamps[-1], RuntimeError("boom"))
    plan = [HistoryRequest("A", T0, stamps[-1]), HistoryRequest("B", T0, stamps[-1])]
    batch, inferred, coverage = history_batch("v", plan, [ok, bad], {}, T0 + 10**9, "r", 0.05)
    assert batch.failed == {"B": "RuntimeError: boom"}
    assert len(batch.rows) == len(stamps) and batch.requested == len(stamps)
    assert [r["interval_hours"] for r in batch.rows] == [8.0] * 10 + [4.0] * 6
    assert [o.hours for o in inferred["A"]] == [8.0, 4.0] and inferred["B"] == []
    assert coverage["B"][0].uncovered[0].reason == "fetch_failed"
    # Nothing known, nothing inferable: the interval stays unknown.
    lone = FundingHistory("C", [{**rows[0], "symbol": "C"}], Coverage(T0, T0, ((T0, T0),), ()))
    batch, _, _ = history_batch("v", [HistoryRequest("C", T0, T0)], [lone], {}, T0, "r", 0.05)
    assert batch.rows[0]["interval_hours"] is None
