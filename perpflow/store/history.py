"""Realized funding bookkeeping: proven coverage (``funding_coverage``) and the funding-interval
history (``funding_intervals``) of each instrument, read for planning and gap detection and
written by the funding sweep after the settlements themselves are stored.

Times cross this module's interface as UTC milliseconds (the paging's unit) and are stored as
timezone-aware UTC timestamps.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from perpflow.backfill import Watermark
from perpflow.history import Coverage, extend_coverage
from perpflow.intervals import IntervalSpan, Observation, apply_observations, hours_at
from perpflow.normalize import ms_to_datetime
from perpflow.store.schema import funding_coverage, funding_history, funding_intervals, instruments


def _ms(ts: datetime | None) -> int | None:
    return None if ts is None else int(ts.timestamp() * 1000)


async def timelines_on(
    conn: AsyncConnection, exchange: str | None, symbols: list[str] | None
) -> dict[tuple[str, str], list[IntervalSpan]]:
    """``read_intervals`` on an open connection (inside the caller's transaction)."""
    fi = funding_intervals
    query = select(fi).order_by(fi.c.exchange, fi.c.symbol, fi.c.valid_from)
    if exchange is not None:
        query = query.where(fi.c.exchange == exchange)
    if symbols is not None:
        query = query.where(fi.c.symbol.in_(symbols))
    found: dict[tuple[str, str], list[IntervalSpan]] = {}
    for row in await conn.execute(query):
        span = IntervalSpan(
            _ms(row.valid_from), _ms(row.valid_to), row.interval_hours, row.source
        )
        found.setdefault((row.exchange, row.symbol), []).append(span)
    return found


async def read_intervals(
    engine: AsyncEngine, exchange: str | None = None, symbols: list[str] | None = None
) -> dict[tuple[str, str], list[IntervalSpan]]:
    """``{(exchange, symbol): funding-interval timeline}`` (``IntervalSpan``s ordered by
    ``valid_from``, UTC ms) from ``funding_intervals``, of ``exchange`` / ``symbols`` when
    given. An instrument whose interval was never known is absent."""
    async with engine.connect() as conn:
        return await timelines_on(conn, exchange, symbols)


async def record_intervals(
    engine: AsyncEngine, exchange: str, observations: dict[str, list[Observation]]
) -> list[dict[str, Any]]:
    """Apply ``observations`` (``{symbol: [Observation]}``: venue-stated or inferred intervals
    with the UTC ms from which they hold) to the stored timelines of ``exchange`` in one
    transaction (``perpflow.intervals.apply_observations``) and return the changes found, as
    ``[{'exchange', 'symbol', 'changed_at' (ISO UTC), 'old_hours', 'new_hours', 'source'}]``."""
    wanted = {symbol: obs for symbol, obs in observations.items() if obs}
    if not wanted:
        return []
    changes: list[dict[str, Any]] = []
    fi = funding_intervals
    async with engine.begin() as conn:
        stored = await timelines_on(conn, exchange, list(wanted))
        for symbol, obs in sorted(wanted.items()):
            before = stored.get((exchange, symbol), [])
            after, found = apply_observations(before, obs)
            if after == before:
                continue
            await conn.execute(delete(fi).where(fi.c.exchange == exchange, fi.c.symbol == symbol))
            await conn.execute(
                fi.insert(),
                [
                    {
                        "exchange": exchange,
                        "symbol": symbol,
                        "valid_from": ms_to_datetime(span.valid_from),
                        "valid_to": span.valid_to and ms_to_datetime(span.valid_to),
                        "interval_hours": span.hours,
                        "source": span.source,
                    }
                    for span in after
                ],
            )
            changes += [
                {
                    "exchange": exchange,
                    "symbol": symbol,
                    "changed_at": ms_to_datetime(change.at).isoformat(),
                    "old_hours": change.old_hours,
                    "new_hours": change.new_hours,
                    "source": change.source,
                }
                for change in found
            ]
    return changes


async def read_coverage(engine: AsyncEngine, exchange: str) -> dict[str, tuple[int, int]]:
    """``{symbol: (covered_from, covered_to)}`` (UTC ms) of ``exchange``'s instruments with
    proven coverage (``funding_coverage``)."""
    fc = funding_coverage
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(fc.c.symbol, fc.c.covered_from, fc.c.covered_to).where(fc.c.exchange == exchange)
        )
        return {symbol: (_ms(lo), _ms(hi)) for symbol, lo, hi in rows}


async def record_coverage(
    engine: AsyncEngine, exchange: str, coverage: dict[str, list[Coverage]], run_id: str | None
) -> dict[str, tuple[int, int] | None]:
    """Extend ``exchange``'s stored coverage by what this run proved (``{symbol: [Coverage]}``,
    one per request; ``perpflow.history.extend_coverage``) in one transaction; call it after the
    settlements are stored, so coverage never claims rows that are not. Returns ``{symbol:
    (covered_from, covered_to) or None}`` as now stored."""
    fc = funding_coverage
    now = datetime.now(UTC)
    result: dict[str, tuple[int, int] | None] = {}
    async with engine.begin() as conn:
        stored = {
            symbol: (_ms(lo), _ms(hi))
            for symbol, lo, hi in await conn.execute(
                select(fc.c.symbol, fc.c.covered_from, fc.c.covered_to).where(
                    fc.c.exchange == exchange, fc.c.symbol.in_(list(coverage))
                )
            )
        }
        for symbol, proofs in sorted(coverage.items()):
            current = stored.get(symbol)
            for proof in sorted(proofs, key=lambda c: c.requested_from):
                current = extend_coverage(current, proof)
            result[symbol] = current
            if current is None or current == stored.get(symbol):
                continue
            values = {
                "covered_from": ms_to_datetime(current[0]),
                "covered_to": ms_to_datetime(current[1]),
                "updated_at": now,
                "run_id": run_id,
            }
            await conn.execute(delete(fc).where(fc.c.exchange == exchange, fc.c.symbol == symbol))
            await conn.execute(fc.insert().values(exchange=exchange, symbol=symbol, **values))
    return result


async def history_watermarks(engine: AsyncEngine, exchange: str) -> dict[str, Watermark]:
    """``{symbol: Watermark}`` for every known instrument of ``exchange``: its proven coverage,
    its newest stored settlement at or before ``covered_to`` and the interval in force then
    (``funding_intervals``; None when unknown)."""
    fc, fh = funding_coverage, funding_history
    newest = (
        select(fh.c.symbol, func.max(fh.c.funding_ts).label("newest"))
        .select_from(
            fh.join(fc, and_(fc.c.exchange == fh.c.exchange, fc.c.symbol == fh.c.symbol))
        )
        .where(fh.c.exchange == exchange, fh.c.funding_ts <= fc.c.covered_to)
        .group_by(fh.c.symbol)
        .subquery()
    )
    query = (
        select(instruments.c.symbol, fc.c.covered_from, fc.c.covered_to, newest.c.newest)
        .select_from(
            instruments.outerjoin(
                fc,
                and_(
                    fc.c.exchange == instruments.c.exchange, fc.c.symbol == instruments.c.symbol
                ),
            ).outerjoin(newest, newest.c.symbol == instruments.c.symbol)
        )
        .where(instruments.c.exchange == exchange)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
        timelines = await timelines_on(conn, exchange, None)
    marks = {}
    for symbol, lo, hi, newest_ts in rows:
        newest_ms = _ms(newest_ts)
        at = newest_ms if newest_ms is not None else _ms(hi)
        timeline = timelines.get((exchange, symbol), [])
        # The interval in force at the newest settlement, else the newest one known.
        hours = hours_at(timeline, at) if at is not None else None
        if hours is None and timeline:
            hours = timeline[-1].hours
        marks[symbol] = Watermark(_ms(lo), _ms(hi), newest_ms, hours)
    return marks

