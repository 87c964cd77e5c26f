"""Daily range partitions of ``tickers`` and ``funding_rates`` on PostgreSQL.

Each partitioned table has one partition per UTC day, named ``<table>_pYYYYMMDD`` and holding
``[day 00:00 UTC, next day 00:00 UTC)`` of ``ts``. Partitions are created by the SQL function
``perpflow_ensure_partition(table, day)`` (revision 0002, made race-free by 0010; SECURITY
DEFINER, so a collector role that may only insert can still open a new day): ahead of time by the
maintain-database flow and on demand when a write meets a day without one; it waits at most 5 s
for its parent's lock. Two sessions asking for the same new day at once both succeed: the second
waits for the first's advisory lock on the day and takes "already exists" as done. There is
no default partition: a row for a day nobody created fails loudly instead of piling up where
retention cannot drop it by day.
SQLite has no partitions; every function here is a no-op there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Table, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

PARTITIONED = ("tickers", "funding_rates")
_DAY_SUFFIX = re.compile(r"^(?P<table>.+)_p(?P<day>\d{8})$")

_ENSURE = text(
    "SELECT created FROM (SELECT perpflow_ensure_partition(:table, d) AS created "
    "FROM unnest(CAST(:days AS date[])) AS d) AS made WHERE created IS NOT NULL"
)


def partition_name(table: str, day: date) -> str:
    """``tickers_p20251123`` for ``('tickers', date(2025, 11, 23))``."""
    return f"{table}_p{day:%Y%m%d}"


def partition_day(name: str) -> tuple[str, date] | None:
    """``(table, day)`` of a daily partition's name, or ``None`` for any other name."""
    match = _DAY_SUFFIX.match(name)
    if not match or match["table"] not in PARTITIONED:
        return None
    return match["table"], datetime.strptime(match["day"], "%Y%m%d").date()


async def ensure_partitions(conn: AsyncConnection, table: str, days: Iterable[date]) -> list[str]:
    """Create the missing daily partitions of ``table`` for ``days`` (UTC dates) on ``conn``;
    returns the names created (empty when all existed: then it costs one round trip
    and takes no lock). No-op on SQLite and for tables that are not partitioned."""
    wanted = sorted(set(days))
    if conn.dialect.name != "postgresql" or table not in PARTITIONED or not wanted:
        return []
    result = await conn.execute(_ENSURE, {"table": table, "days": wanted})
    return list(result.scalars())


async def ensure_row_partitions(
    engine: AsyncEngine, table: Table, rows: list[dict[str, Any]]
) -> list[str]:
    """Make sure the partitions for the ``ts`` days of ``rows`` exist before they are inserted.

    One autocommit statement, before (not inside) the write's transaction: creating a partition
    briefly locks its parent, and the function waits at most 5 s for that lock (``lock_timeout``),
    so it never queues other writers for long. Returns the names created.
    """
    if engine.dialect.name != "postgresql" or table.name not in PARTITIONED or not rows:
        return []
    days = {row["ts"].astimezone(UTC).date() for row in rows}
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        return await ensure_partitions(conn, table.name, days)
