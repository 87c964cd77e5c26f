"""Read-side helpers: what is stored, per venue."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from perpflow.store.schema import funding_history, funding_rates, instruments, quarantine, tickers

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
