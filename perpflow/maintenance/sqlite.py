"""SQLite: measure the file, its tables and indexes; run maintenance statements.

Every statement waits at most ``lock_timeout`` for the database lock (``busy_timeout``) and is
interrupted after ``statement_timeout`` (a progress handler), on an autocommit connection (VACUUM
cannot run inside a transaction). Sizes come from the ``dbstat`` table; "bloat" is the share of
the file on the free list.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from sqlalchemy import bindparam, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from perpflow.maintenance.model import Action, Limits, ObjectStats, Snapshot, quote
from perpflow.store.engine import SQLITE_PRAGMAS
from perpflow.store.schema import UTCDateTime

AUTO_VACUUM = {0: "none", 1: "full", 2: "incremental"}
PROGRESS_OPS = 10_000  # SQLite VM instructions between two looks at the clock


@asynccontextmanager
async def session(engine: AsyncEngine, limits: Limits) -> AsyncIterator[AsyncConnection]:
    """An autocommit connection whose statements wait ``lock_timeout`` for locks and are
    interrupted after ``statement_timeout`` (restored to the engine's defaults on exit)."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        driver = (await conn.get_raw_connection()).driver_connection
        deadline = time.monotonic() + limits.statement_timeout
        await driver.set_progress_handler(lambda: time.monotonic() > deadline, PROGRESS_OPS)
        await conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(limits.lock_timeout * 1000)}")
        try:
            yield conn
        finally:
            await driver.set_progress_handler(None, PROGRESS_OPS)
            for pragma in SQLITE_PRAGMAS:
                if "busy_timeout" in pragma:
                    await conn.exec_driver_sql(pragma)


async def _pragma(conn: AsyncConnection, name: str):
    return (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar_one()


async def measure(conn: AsyncConnection) -> Snapshot:
    """The file (size, free-page share, auto_vacuum mode) and each table's and index's size."""
    page_size = await _pragma(conn, "page_size")
    pages = await _pragma(conn, "page_count")
    free = await _pragma(conn, "freelist_count")
    mode = AUTO_VACUUM.get(await _pragma(conn, "auto_vacuum"), "none")
    objects = [
        ObjectStats(
            name="main",
            kind="database",
            size_bytes=pages * page_size,
            bloat=free / pages if pages else 0.0,
            bloat_source="freelist",
            method=mode,
        )
    ]
    rows = await conn.exec_driver_sql(
        "SELECT m.name, m.type, m.tbl_name, sum(d.pgsize) FROM sqlite_schema m "
        "JOIN dbstat d ON d.name = m.name WHERE m.type IN ('table', 'index') "
        "GROUP BY m.name ORDER BY m.name"
    )
    for name, kind, table, size in rows.all():
        objects.append(
            ObjectStats(
                name=name, kind=kind, table=None if kind == "table" else table, size_bytes=size
            )
        )
    return Snapshot("sqlite", datetime.now(UTC), objects)


async def delete_expired(conn: AsyncConnection, action: Action, batch: int) -> int:
    """Delete ``action.target``'s rows whose time is before ``action.cutoff``, ``batch`` rows per
    statement (each its own short transaction); returns how many rows went."""
    table = quote(action.target)
    column = "funding_ts" if action.target == "funding_history" else "ts"
    statement = text(
        f"DELETE FROM {table} WHERE rowid IN "
        f"(SELECT rowid FROM {table} WHERE {column} < :cutoff LIMIT :batch)"
    ).bindparams(bindparam("cutoff", type_=UTCDateTime()))
    deleted = 0
    while True:
        result = await conn.execute(statement, {"cutoff": action.cutoff, "batch": batch})
        deleted += result.rowcount
        if result.rowcount < batch:
            return deleted


def is_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's busy timeout or an interrupted (over-long) statement."""
    return isinstance(exc, OperationalError) and any(
        word in str(exc.orig) for word in ("interrupted", "database is locked", "database is busy")
    )
