"""Planning of realized funding history: which symbols are due and from when (watermarks), where
stored settlements have gaps, and which windows the sweep fetches to fill them.

A gap is one or more missing settlements between two stored ones of a symbol, judged against the
symbol's funding interval: consecutive settlements ``GAP_RATIO`` or more intervals apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from perpflow.normalize import interval_ms

GAP_RATIO = 1.5


@dataclass(frozen=True)
class HistoryRequest:
    """Fetch ``symbol``'s settlements in ``[since_ms, until_ms]`` (UTC ms) with ``interval_ms``
    between settlements."""

    symbol: str
    since_ms: int
    until_ms: int
    interval_ms: int


def plan_history(
    symbols: list[str],
    watermarks: dict[str, tuple[datetime | None, float | None]],
    now_ms: int,
    lookback_ms: int,
    default_interval_hours: float = 8.0,
) -> list[HistoryRequest]:
    """The history requests one sweep makes for ``symbols``.

    ``watermarks`` is ``{symbol: (newest stored settlement, interval hours)}`` (see
    ``perpflow.store.funding_watermarks``). A symbol without stored history is backfilled from
    ``now_ms - lookback_ms``; one with history is due only once a settlement may have happened
    after its newest stored one (newest + interval <= now), and is then fetched from just after it.
    """
    plan = []
    for symbol in symbols:
        newest, hours = watermarks.get(symbol, (None, None))
        step = interval_ms(hours, default_interval_hours)
        if newest is None:
            plan.append(HistoryRequest(symbol, now_ms - lookback_ms, now_ms, step))
            continue
        newest_ms = int(newest.timestamp() * 1000)
        if newest_ms + step <= now_ms:
            plan.append(HistoryRequest(symbol, newest_ms + 1, now_ms, step))
    return plan


@dataclass(frozen=True)
class Step:
    """Two consecutive stored settlements of one symbol and how many intervals lie between them."""

    previous: datetime
    settled: datetime
    intervals: float


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


def settlement_steps(stamps: list[datetime], hours: float | None) -> list[Step]:
    """The steps between consecutive settlement times ``stamps`` (sorted ascending, distinct) of
    one symbol, in units of its funding interval ``hours`` (None: 8 h)."""
    step_ms = interval_ms(hours)
    return [
        Step(a, b, (b - a) / timedelta(milliseconds=step_ms)) for a, b in zip(stamps, stamps[1:])
    ]


def find_gaps(exchange: str, symbol: str, stamps: list[datetime], hours: float | None) -> list[Gap]:
    """The gaps between ``symbol``'s stored settlement times ``stamps`` (sorted ascending): every
    step of ``GAP_RATIO`` intervals or more, as the missing settlements inside it."""
    interval = timedelta(milliseconds=interval_ms(hours))
    gaps = []
    for step in settlement_steps(stamps, hours):
        if step.intervals >= GAP_RATIO:
            missing = round(step.intervals) - 1
            gaps.append(
                Gap(
                    exchange,
                    symbol,
                    step.previous + interval,
                    step.previous + missing * interval,
                    interval / timedelta(hours=1),
                    missing,
                )
            )
    return gaps


def gap_requests(gaps: list[Gap]) -> list[HistoryRequest]:
    """The history requests that refetch the windows of open ``gaps`` (each ``[gap_from,
    gap_to]``, UTC ms)."""
    return [
        HistoryRequest(
            gap.symbol,
            int(gap.gap_from.timestamp() * 1000),
            int(gap.gap_to.timestamp() * 1000),
            interval_ms(gap.interval_hours),
        )
        for gap in gaps
    ]
