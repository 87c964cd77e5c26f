"""Funding-history gaps: the settlements a window holds, the gaps found there, their fill status.

A gap is recorded ``open`` by the data-quality check; the funding sweep refetches the open gaps'
windows and marks each ``filled`` (every missing settlement is now stored) or ``unfillable`` (the
venue answered but no longer serves them; ``detail`` says how many it served). A gap found again
keeps its status, so an unfillable gap is reported again, not retried forever.

A window of a history request that the venue's answers prove unreachable for good (older than
the venue keeps, ``beyond_venue_horizon``; no history call, ``venue_unsupported``) is recorded by
the sweep itself as ``unfillable`` with that reason first in ``detail`` (``record_unreachable``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from perpflow.backfill import Gap
from perpflow.history import PERMANENT_REASONS, Coverage
from perpflow.intervals import IntervalSpan, hours_at
from perpflow.normalize import HOUR_MS, ms_to_datetime
from perpflow.store.history import timelines_on
from perpflow.store.schema import funding_gaps, funding_history
from perpflow.store.writes import insert_new

OPEN, FILLED, UNFILLABLE = "open", "filled", "unfillable"


async def settlements(
    engine: AsyncEngine, start: datetime, end: datetime
) -> dict[tuple[str, str], tuple[list[IntervalSpan], list[datetime]]]:
    """``{(exchange, symbol): (funding-interval timeline, settlement times)}`` for every symbol
    with a stored settlement in ``[start, end)``; the times are sorted and include the symbol's
    last settlement before ``start`` (so a gap across ``start`` is seen). The timeline is the
    instrument's ``funding_intervals`` history (``IntervalSpan``s, UTC ms; empty when never
    known), for ``perpflow.backfill.find_gaps``."""
    fh = funding_history
    previous = (
        select(fh.c.exchange, fh.c.symbol, func.max(fh.c.funding_ts).label("ts"))
        .where(fh.c.funding_ts < start)
        .group_by(fh.c.exchange, fh.c.symbol)
        .subquery()
    )
    in_window = select(fh.c.exchange, fh.c.symbol).where(
        fh.c.funding_ts >= start, fh.c.funding_ts < end
    )
    query = (
        select(fh.c.exchange, fh.c.symbol, fh.c.funding_ts)
        .select_from(
            fh.outerjoin(
                previous,
                and_(previous.c.exchange == fh.c.exchange, previous.c.symbol == fh.c.symbol),
            )
        )
        .where(tuple_(fh.c.exchange, fh.c.symbol).in_(in_window))
        .where(fh.c.funding_ts < end)
        .where((fh.c.funding_ts >= start) | (fh.c.funding_ts == previous.c.ts))
        .order_by(fh.c.exchange, fh.c.symbol, fh.c.funding_ts)
    )
    stamps: dict[tuple[str, str], list[datetime]] = {}
    async with engine.connect() as conn:
        for exchange, symbol, ts in await conn.execute(query):
            stamps.setdefault((exchange, symbol), []).append(ts)
        timelines = await timelines_on(conn, None, None) if stamps else {}
    return {key: (timelines.get(key, []), times) for key, times in stamps.items()}


async def record_gaps(engine: AsyncEngine, gaps: list[Gap], run_id: str) -> list[dict[str, Any]]:
    """Record newly found ``gaps`` as ``open`` (gaps already known keep their status) and return
    every given gap as a row dict with its current ``status`` and ``detail``."""
    if not gaps:
        return []
    now = datetime.now(UTC)
    rows = [
        {**gap.__dict__, "status": OPEN, "detail": None, "found_at": now, "found_run_id": run_id}
        for gap in gaps
    ]
    keys = [(g.exchange, g.symbol, g.gap_from) for g in gaps]
    async with engine.begin() as conn:
        await insert_new(conn, funding_gaps, rows)
        stored = await conn.execute(
            select(funding_gaps).where(
                tuple_(funding_gaps.c.exchange, funding_gaps.c.symbol, funding_gaps.c.gap_from).in_(
                    keys
                )
            )
        )
        return [dict(row._mapping) for row in stored]


async def read_gaps(
    engine: AsyncEngine, status: str, exchange: str | None = None
) -> list[dict[str, Any]]:
    """Stored gaps with ``status`` (of ``exchange`` only, when given), oldest first, as row
    dicts (columns of ``funding_gaps``)."""
    query = select(funding_gaps).where(funding_gaps.c.status == status)
    if exchange is not None:
        query = query.where(funding_gaps.c.exchange == exchange)
    async with engine.connect() as conn:
        rows = await conn.execute(query.order_by(funding_gaps.c.gap_from))
        return [dict(row._mapping) for row in rows]


def as_gap(row: dict[str, Any]) -> Gap:
    """A ``funding_gaps`` row dict as a ``Gap``."""
    return Gap(*(row[name] for name in Gap.__dataclass_fields__))


async def resolve_gaps(engine: AsyncEngine, gaps: list[Gap], run_id: str) -> list[dict[str, Any]]:
    """After the sweep refetched ``gaps``' windows: mark each ``filled`` when all its missing
    settlements are now stored, else ``unfillable`` with how many the venue served. Returns
    ``[{'exchange', 'symbol', 'gap_from', 'gap_to', 'missing', 'stored', 'status'}]``."""
    now = datetime.now(UTC)
    outcomes = []
    async with engine.begin() as conn:
        for gap in gaps:
            fh = funding_history
            stored = (
                await conn.execute(
                    select(func.count()).where(
                        fh.c.exchange == gap.exchange,
                        fh.c.symbol == gap.symbol,
                        fh.c.funding_ts >= gap.gap_from,
                        fh.c.funding_ts <= gap.gap_to,
                    )
                )
            ).scalar_one()
            status = FILLED if stored >= gap.missing else UNFILLABLE
            detail = f"venue served {stored} of {gap.missing} missing settlement(s)"
            await conn.execute(
                update(funding_gaps)
                .where(
                    funding_gaps.c.exchange == gap.exchange,
                    funding_gaps.c.symbol == gap.symbol,
                    funding_gaps.c.gap_from == gap.gap_from,
                )
                .values(status=status, detail=detail, resolved_at=now, resolved_run_id=run_id)
            )
            outcomes.append(
                {
                    "exchange": gap.exchange,
                    "symbol": gap.symbol,
                    "gap_from": gap.gap_from.isoformat(),
                    "gap_to": gap.gap_to.isoformat(),
                    "missing": gap.missing,
                    "stored": stored,
                    "status": status,
                }
            )
    return outcomes


async def record_unreachable(
    engine: AsyncEngine,
    exchange: str,
    coverage: dict[str, list[Coverage]],
    run_id: str,
) -> list[dict[str, Any]]:
    """Record the windows of ``coverage`` (one sweep's ``{symbol: [Coverage]}``) that are
    unreachable for good as ``unfillable`` gaps, ``detail`` = ``'<reason>: <detail>'``; returns
    the rows recorded now (a window already recorded is not repeated), each with ``stored`` 0.

    ``gap_from``/``gap_to`` are the window's bounds, ``interval_hours`` the interval in force at
    its start per the instrument's ``funding_intervals`` history (0 when unknown) and ``missing`` the settlements that interval
    puts in the window (0 when unknown). Windows left by a failed fetch are not recorded: their
    coverage did not advance, so the next sweep asks again.
    """
    now = datetime.now(UTC)
    rows = []
    if not any(p.reason in PERMANENT_REASONS for c in coverage.values() for v in c
               for p in v.uncovered):
        return []
    async with engine.connect() as conn:
        timelines = await timelines_on(conn, exchange, list(coverage))
    for symbol, proofs in coverage.items():
        for proof in proofs:
            for part in proof.uncovered:
                if part.reason not in PERMANENT_REASONS:
                    continue
                hours = hours_at(timelines.get((exchange, symbol), []), part.start) or 0.0
                step = int(hours * HOUR_MS)
                missing = (part.end // step - (part.start - 1) // step) if step else 0
                rows.append({
                    "exchange": exchange, "symbol": symbol,
                    "gap_from": ms_to_datetime(part.start), "gap_to": ms_to_datetime(part.end),
                    "interval_hours": hours, "missing": missing, "status": UNFILLABLE,
                    "detail": f"{part.reason}: {part.detail}"[:1000], "found_at": now,
                    "found_run_id": run_id, "resolved_at": now, "resolved_run_id": run_id,
                })
    async with engine.begin() as conn:
        await insert_new(conn, funding_gaps, rows)
    return [{**row, "stored": 0} for row in rows]
