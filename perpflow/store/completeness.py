"""The ``completeness`` table: the daily certificate, one row per (venue, dataset, UTC day).

Writes are upserts by key (``INSERT ... ON CONFLICT DO UPDATE``: the certificate role needs
INSERT and UPDATE on the table, nothing more), so certifying a day again replaces its rows.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from perpflow.store.schema import completeness

KEY = ("exchange", "dataset", "day")


async def write_certificate(engine: AsyncEngine, rows: list[dict[str, Any]]) -> int:
    """Upsert ``rows`` (columns of ``completeness``) by (exchange, dataset, day); returns how
    many were written."""
    if not rows:
        return 0
    insert = (postgresql if engine.dialect.name == "postgresql" else sqlite).insert
    stmt = insert(completeness)
    columns = [c.name for c in completeness.columns if c.name not in KEY]
    async with engine.begin() as conn:
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=list(KEY), set_={c: stmt.excluded[c] for c in columns}
            ),
            rows,
        )
    return len(rows)


async def read_certificate(
    engine: AsyncEngine, first_day: date, last_day: date | None = None
) -> list[dict[str, Any]]:
    """The stored certificate rows of the UTC days ``first_day`` .. ``last_day`` (inclusive;
    default ``first_day`` only), ordered by day, exchange, dataset, as row dicts."""
    c = completeness.c
    query = (
        select(completeness)
        .where(c.day >= first_day, c.day <= (last_day or first_day))
        .order_by(c.day, c.exchange, c.dataset)
    )
    async with engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(query)]
