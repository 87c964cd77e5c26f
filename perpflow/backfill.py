"""Planning of realized funding history: which symbols are due and from when (the proven
coverage), where stored settlements have gaps, and which windows the sweep fetches to fill them.

A gap is one or more missing settlements between two stored ones of a symbol, judged against the
funding interval in force (``perpflow.intervals``): consecutive settlements ``GAP_RATIO`` or more
intervals apart. Where no interval is known the spacing inferred from the settlements themselves
is used; a step with neither is not judged (never an assumed 8 h).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from perpflow.intervals import HOUR_MS, IntervalSpan, apply_observations, hours_at, infer_intervals

GAP_RATIO = 1.5


@dataclass(frozen=True)
class HistoryRequest:
    """Fetch ``symbol``'s settlements in ``[since_ms, until_ms]`` (UTC ms). ``interval_ms``: the
    funding interval in force when known (None: unknown; paging never needs it); ``anchor_ms``:
    a settlement already stored before ``since_ms`` that paging asks from, to prove the stretch
    after it (None: none known)."""

    symbol: str
    since_ms: int
    until_ms: int
    interval_ms: int | None = None
    anchor_ms: int | None = None


@dataclass(frozen=True)
class Watermark:
    """Where one instrument's realized funding stands: ``covered_from``/``covered_to`` (UTC ms)
    of its proven coverage (``funding_coverage``; None: never covered), ``newest_ms`` its newest
    stored settlement at or before ``covered_to`` (None: none) and ``hours`` the funding interval
    in force then (None: unknown)."""

    covered_from: int | None = None
    covered_to: int | None = None
    newest_ms: int | None = None
    hours: float | None = None


def plan_history(
    symbols: list[str], watermarks: dict[str, Watermark], now_ms: int, lookback_ms: int
) -> list[HistoryRequest]:
    """The history requests one sweep makes for ``symbols``.

    A symbol never covered is backfilled over ``[now_ms - lookback_ms, now_ms]``. A covered one
    is fetched from just after its ``covered_to`` (so coverage that stopped short is fetched
    again), anchored at its newest stored settlement, once a settlement may exist after that one
    (newest + interval <= now); with an unknown interval or no stored settlement it is fetched
    every sweep (paging is by time and needs no interval).
    """
    plan = []
    for symbol in symbols:
        mark = watermarks.get(symbol) or Watermark()
        step = int(mark.hours * HOUR_MS) if mark.hours else None
        if mark.covered_to is None:
            plan.append(HistoryRequest(symbol, now_ms - lookback_ms, now_ms, step))
            continue
        if mark.covered_to >= now_ms:
            continue
        newest = mark.newest_ms
        if step is not None and newest is not None and newest + step > now_ms:
            continue
        anchor = newest if newest is not None and newest <= mark.covered_to else None
        plan.append(HistoryRequest(symbol, mark.covered_to + 1, now_ms, step, anchor))
    return plan


@dataclass(frozen=True)
class Step:
    """Two consecutive stored settlements of one symbol, how many funding intervals lie between
    them (``intervals``) and the interval they were judged by (``hours``)."""

    previous: datetime
    settled: datetime
    intervals: float
    hours: float


@dataclass(frozen=True)
class Gap:
    """Missing settlements of ``symbol`` on ``exchange``: the first (``gap_from``) and last
    (``gap_to``) missing settlement times (UTC, aware), ``missing`` of them, ``interval_hours``
    apart."""

    exchange: str
    symbol: str
    gap_from: datetime
    gap_to: datetime
    interval_hours: float
    missing: int


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


Intervals = list[IntervalSpan] | float | None


def settlement_steps(stamps: list[datetime], intervals: Intervals) -> list[Step]:
    """The steps between consecutive settlement times ``stamps`` (sorted ascending, distinct) of
    one symbol, in units of the funding interval in force (``intervals``: the symbol's timeline,
    a number of hours in force throughout, or None / empty when unknown). A step across a change
    is judged by the longer of the intervals in force at its two ends. Where the timeline is
    silent the interval inferred from ``stamps`` is used (its first inferred interval also for
    the steps before it); steps with neither are left out."""
    ms = [_ms(ts) for ts in stamps]
    if isinstance(intervals, int | float):
        known = [IntervalSpan(0, None, float(intervals), "given")]
    else:
        known = intervals or []
    inferred, _ = apply_observations([], infer_intervals(ms))

    def at(t: int) -> float | None:
        hours = hours_at(known, t) or hours_at(inferred, t)
        if hours is None and inferred and t < inferred[0].valid_from:
            hours = inferred[0].hours
        return hours

    steps = []
    for (a, b), (ta, tb) in zip(zip(stamps, stamps[1:]), zip(ms, ms[1:])):
        candidates = [h for h in (at(ta), at(tb)) if h]
        if candidates:
            hours = max(candidates)
            steps.append(Step(a, b, (tb - ta) / (hours * HOUR_MS), hours))
    return steps


def find_gaps(
    exchange: str, symbol: str, stamps: list[datetime], intervals: Intervals
) -> list[Gap]:
    """The gaps between ``symbol``'s stored settlement times ``stamps`` (sorted ascending): every
    step of ``GAP_RATIO`` intervals or more (``settlement_steps``), as the missing settlements
    inside it."""
    gaps = []
    for step in settlement_steps(stamps, intervals):
        if step.intervals >= GAP_RATIO:
            interval = timedelta(hours=step.hours)
            missing = round(step.intervals) - 1
            gaps.append(
                Gap(
                    exchange,
                    symbol,
                    step.previous + interval,
                    step.previous + missing * interval,
                    step.hours,
                    missing,
                )
            )
    return gaps


def gap_requests(gaps: list[Gap]) -> list[HistoryRequest]:
    """The history requests that refetch the windows of open ``gaps`` (each ``[gap_from,
    gap_to]``, UTC ms), anchored at the stored settlement before each gap."""
    requests = []
    for gap in gaps:
        step = int(gap.interval_hours * HOUR_MS)
        start = _ms(gap.gap_from.astimezone(UTC))
        requests.append(
            HistoryRequest(gap.symbol, start, _ms(gap.gap_to), step, start - step)
        )
    return requests
