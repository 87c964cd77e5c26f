"""Read-side helpers: what is stored, per venue; the standard reads of market data."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, literal_column, select, true
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from perpflow.store.schema import (
    funding_history,
    funding_rates,
    instrument_key,
    instruments,
    quarantine,
    tickers,
)

COUNTED = (instruments, tickers, funding_rates, funding_history, quarantine)


async def stored_summary(engine: AsyncEngine) -> list[dict[str, Any]]:
    """Row counts per exchange: ``[{'exchange', 'instruments', 'tickers', 'funding_rates',
    'funding_history', 'quarantine'}]``, sorted by exchange."""
    summary: dict[str, dict[str, Any]] = {}
    async with engine.connect() as conn:
        for table in COUNTED:
            query = select(table.c.exchange, func.count()).group_by(table.c.exchange)
            for exchange, count in (await conn.execute(query)).all():
                row = summary.setdefault(exchange, {"exchange": exchange} | {t.name: 0 for t in COUNTED})
                row[table.name] = count
    return [summary[name] for name in sorted(summary)]


async def latest_tickers(conn: AsyncConnection, exchange: str) -> list[Row]:
    """The newest stored ticker row of every instrument of ``exchange`` (all ``tickers``
    columns): the newest ``ts``, and of several observations at that ``ts`` (values that changed
    between polls of a venue whose time is its last trade's) the newest ``collected_at`` (then the
    larger ``obs_key``, so exactly one row per instrument).

    One primary-key probe per known instrument (PostgreSQL: a ``LATERAL`` newest-first
    ``LIMIT 1``; SQLite: ``max(ts)`` per instrument, then the newest row at that time by
    ``rowid``), so its cost grows with the venue's instruments, not with the table's history."""
    mine = tickers.c.instrument_key == instruments.c.instrument_key
    newest_first = (tickers.c.ts.desc(), tickers.c.collected_at.desc(), tickers.c.obs_key.desc())
    if conn.dialect.name == "postgresql":
        newest = select(tickers).where(mine).order_by(*newest_first).limit(1).lateral()
        query = (
            select(newest)
            .select_from(instruments.join(newest, true()))
            .where(instruments.c.exchange == exchange)
        )
    else:
        rowid = literal_column("tickers.rowid")
        latest = select(func.max(tickers.c.ts)).where(mine).correlate(instruments)
        latest = latest.scalar_subquery()
        row = (
            select(rowid)
            .where(mine, tickers.c.ts == latest)
            .order_by(*newest_first[1:])
            .limit(1)
            .correlate(instruments)
            .scalar_subquery()
        )
        known = select(row).where(instruments.c.exchange == exchange)
        query = select(tickers).where(rowid.in_(known))
    return list((await conn.execute(query)).all())


async def ticker_window(
    conn: AsyncConnection, exchange: str, symbol: str, since: datetime, until: datetime
) -> list[Row]:
    """``symbol``'s ticker rows on ``exchange`` with ``since <= ts < until`` (tz-aware UTC), oldest
    first (by ``ts``, then ``collected_at``: every observation stored at a time)."""
    query = (
        select(tickers)
        .where(tickers.c.instrument_key == instrument_key(exchange, symbol))
        .where(tickers.c.exchange == exchange, tickers.c.symbol == symbol)
        .where(tickers.c.ts >= since, tickers.c.ts < until)
        .order_by(tickers.c.ts, tickers.c.collected_at)
    )
    return list((await conn.execute(query)).all())


async def daily_funding(
    conn: AsyncConnection, exchange: str, since: datetime, until: datetime
) -> list[Row]:
    """Observed funding of ``exchange`` per symbol and UTC day for ``since <= ts < until``:
    rows ``(symbol, day 'YYYY-MM-DD', observations, mean_rate, min_rate, max_rate)``, rates as a
    fraction per funding interval, ordered by symbol and day."""
    ts = funding_rates.c.ts
    if conn.dialect.name == "postgresql":
        day = func.to_char(func.timezone("UTC", ts), "YYYY-MM-DD")
    else:  # stored as UTC text
        day = func.strftime("%Y-%m-%d", ts)
    day = day.label("day")
    rate = funding_rates.c.funding_rate
    query = (
        select(
            funding_rates.c.symbol,
            day,
            func.count().label("observations"),
            func.avg(rate).label("mean_rate"),
            func.min(rate).label("min_rate"),
            func.max(rate).label("max_rate"),
        )
        .where(funding_rates.c.exchange == exchange, ts >= since, ts < until)
        .group_by(funding_rates.c.symbol, day)
        .order_by(funding_rates.c.symbol, day)
    )
    return list((await conn.execute(query)).all())
