"""A data-quality window's rows as pandas DataFrames, with the derived columns the suites check.

Rows are chosen by collection time (``collected_at`` in ``[start, end)``), so a row whose own
timestamp is wrong (in the future, or stale) is still seen. Funding-history continuity looks at
settlement times (``funding_ts`` in the window, plus each symbol's previous settlement).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pandas as pd
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from perpflow.backfill import Gap, find_gaps, settlement_steps
from perpflow.store import funding_history, funding_rates, instruments, settlements, tickers

INSTRUMENT_GRACE = timedelta(days=1)

COLUMNS = {
    "tickers": [
        "exchange",
        "symbol",
        "ts",
        "bid",
        "ask",
        "last",
        "mark_price",
        "index_price",
        "collected_at",
        "obs_key",
    ],
    "funding_rates": [
        "exchange",
        "symbol",
        "ts",
        "funding_rate",
        "next_funding_rate",
        "mark_price",
        "index_price",
        "collected_at",
        "obs_key",
    ],
    "funding_history": ["exchange", "symbol", "funding_ts", "funding_rate", "collected_at"],
}


@dataclass(frozen=True)
class QualityWindow:
    """The window ``[start, end)`` (timezone-aware UTC datetimes) a data-quality run checks.

    Raises ``ValueError`` naming the field and value for a naive datetime or ``start >= end``.
    """

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value.tzinfo is None:
                raise ValueError(
                    f"{name}={value.isoformat()!r}: expected a timezone-aware UTC time"
                )
        if self.start >= self.end:
            raise ValueError(
                f"start={self.start.isoformat()!r}: must be before end={self.end.isoformat()!r}"
            )


@dataclass
class WindowData:
    """What one window holds: ``frames`` by dataset name (``tickers``, ``funding_rates``,
    ``funding_history``, ``coverage``, ``funding_continuity``) and the funding-history ``gaps``."""

    frames: dict[str, pd.DataFrame]
    gaps: list[Gap] = field(default_factory=list)


async def _rows(engine: AsyncEngine, table: Table, window: QualityWindow) -> pd.DataFrame:
    names = COLUMNS[table.name]
    query = select(*(table.c[name] for name in names)).where(
        table.c.collected_at >= window.start, table.c.collected_at < window.end
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    frame = pd.DataFrame(rows, columns=names)
    for name in names:
        if name.endswith(("ts", "_at")):
            frame[name] = pd.to_datetime(frame[name], utc=True)
        elif name == "obs_key":  # a 64-bit digest: exact as int64, not as a float
            frame[name] = frame[name].astype("int64")
        elif name not in ("exchange", "symbol"):
            frame[name] = frame[name].astype("float64")
    return frame


def _seconds(delta: pd.Series) -> pd.Series:
    return delta.dt.total_seconds()


def _with_derived(frame: pd.DataFrame, time_column: str) -> pd.DataFrame:
    """Add ``ts_lag_seconds`` (collection time - row time; negative: the row is in the future)
    and, where prices are given, ``mark_index_deviation`` (|mark / index - 1|)."""
    frame["ts_lag_seconds"] = _seconds(frame["collected_at"] - frame[time_column])
    if "mark_price" in frame:
        frame["mark_index_deviation"] = (frame["mark_price"] / frame["index_price"] - 1).abs()
    return frame


async def _active_instruments(engine: AsyncEngine, window: QualityWindow) -> pd.DataFrame:
    """Active instruments listed before the window ended and seen by a collection since a day
    before it started (a venue dropped from the configuration stops counting after a day)."""
    query = select(instruments.c.exchange, instruments.c.symbol).where(
        instruments.c.active.is_(True),
        instruments.c.first_seen < window.end,
        instruments.c.last_seen >= window.start - INSTRUMENT_GRACE,
    )
    async with engine.connect() as conn:
        return pd.DataFrame((await conn.execute(query)).all(), columns=["exchange", "symbol"])


def _coverage(active: pd.DataFrame, frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per venue: active instruments, and for tickers and funding rates the share of them with at
    least one row in the window (0..1)."""
    coverage = active.groupby("exchange").size().rename("active_instruments").to_frame()
    for dataset in ("tickers", "funding_rates"):
        seen = frames[dataset][["exchange", "symbol"]].drop_duplicates()
        covered = active.merge(seen, on=["exchange", "symbol"]).groupby("exchange").size()
        coverage[f"{dataset}_symbols"] = covered.reindex(coverage.index, fill_value=0)
        coverage[f"{dataset}_coverage"] = (
            coverage[f"{dataset}_symbols"] / coverage["active_instruments"]
        )
    return coverage.reset_index()


async def load_frames(engine: AsyncEngine, window: QualityWindow) -> WindowData:
    """Load ``window`` from the market database (``engine``) into DataFrames for the suites.

    ``tickers``/``funding_rates``/``funding_history``: the stored columns (prices in quote
    currency, rates as fractions per interval, times as UTC) of rows collected in the window, plus
    ``ts_lag_seconds`` and ``mark_index_deviation``; ``coverage``: one row per venue;
    ``funding_continuity``: one row per stored settlement in the window with
    ``intervals_since_previous`` (the step from the symbol's previous settlement, in funding
    intervals). ``gaps``: the missing settlements found there.
    """
    frames = {
        table.name: await _rows(engine, table, window)
        for table in (tickers, funding_rates, funding_history)
    }
    _with_derived(frames["tickers"], "ts")
    _with_derived(frames["funding_rates"], "ts")
    _with_derived(frames["funding_history"], "funding_ts")
    frames["coverage"] = _coverage(await _active_instruments(engine, window), frames)
    series = await settlements(engine, window.start, window.end)
    steps = [
        (exchange, symbol, step.settled, step.previous, step.intervals)
        for (exchange, symbol), (hours, stamps) in series.items()
        for step in settlement_steps(stamps, hours)
    ]
    continuity = pd.DataFrame(
        steps,
        columns=["exchange", "symbol", "funding_ts", "previous_ts", "intervals_since_previous"],
    )
    continuity["intervals_since_previous"] = continuity["intervals_since_previous"].astype(
        "float64"
    )
    frames["funding_continuity"] = continuity
    gaps = [
        gap
        for (exchange, symbol), (hours, stamps) in series.items()
        for gap in find_gaps(exchange, symbol, stamps, hours)
    ]
    return WindowData(frames, gaps)
