"""PostgreSQL: measure tables, indexes and daily partitions; run maintenance statements.

Every statement runs on an autocommit session (VACUUM, REINDEX CONCURRENTLY and DETACH
CONCURRENTLY cannot run in a transaction block) with ``lock_timeout`` and ``statement_timeout``
set. Bloat comes from the pgstattuple extension when it is installed (``pgstattuple_approx``
for tables, ``pgstatindex`` for btree indexes), else from an estimate out of the catalog
statistics (dead-tuple share for tables; expected btree size from row count and column widths).
The queries name the extension's functions only when it is there.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from perpflow.maintenance.model import Limits, ObjectStats, Partition, Snapshot
from perpflow.store.partitions import partition_day

BTREE_FILLFACTOR = 0.9
PAGE_BYTES = 8192
INDEX_TUPLE_OVERHEAD = 8 + 4  # index tuple header + line pointer, bytes

TABLES = """
SELECT c.relname AS name, c.relkind::text AS relkind, pg_total_relation_size(c.oid) AS size_bytes,
       s.n_live_tup, s.n_dead_tup, s.last_vacuum, s.last_autovacuum, s.last_analyze,
       s.last_autoanalyze,
       {table_bloat} AS bloat_percent
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
ORDER BY c.relname
"""
TABLE_BLOAT = """CASE WHEN c.relkind = 'r' THEN (SELECT a.approx_free_percent + a.dead_tuple_percent
                 FROM pgstattuple_approx(c.oid::regclass) AS a) END"""

INDEXES = """
SELECT c.relname AS name, t.relname AS table_name, am.amname AS method,
       pg_relation_size(c.oid) AS size_bytes, i.indisvalid AS valid, t.reltuples,
       (SELECT sum(st.avg_width) FROM pg_attribute a
        JOIN pg_stats st ON st.schemaname = n.nspname AND st.tablename = t.relname
                        AND st.attname = a.attname
        WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)) AS key_width,
       {leaf_density} AS leaf_density
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_am am ON am.oid = c.relam
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind = 'i'
ORDER BY c.relname
"""
LEAF_DENSITY = """CASE WHEN am.amname = 'btree' AND i.indisvalid
                   THEN (SELECT s.avg_leaf_density FROM pgstatindex(c.oid::regclass) AS s) END"""

PARTITIONS = text("""
SELECT c.relname AS name, p.relname AS parent, i.inhdetachpending AS pending
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
LEFT JOIN pg_class p ON p.oid = i.inhparent
WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname ~ '_p[0-9]{8}$'
""")


@asynccontextmanager
async def session(engine: AsyncEngine, limits: Limits) -> AsyncIterator[AsyncConnection]:
    """An autocommit connection with ``lock_timeout`` and ``statement_timeout`` (reset on exit)."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.exec_driver_sql(f"SET lock_timeout = {int(limits.lock_timeout * 1000)}")
        await conn.exec_driver_sql(
            f"SET statement_timeout = {int(limits.statement_timeout * 1000)}"
        )
        try:
            yield conn
        finally:
            await conn.exec_driver_sql("RESET lock_timeout")
            await conn.exec_driver_sql("RESET statement_timeout")


async def has_pgstattuple(conn: AsyncConnection) -> bool:
    """Whether the pgstattuple extension is installed and its functions may be called."""
    query = text(
        "SELECT CASE WHEN to_regprocedure('pgstatindex(regclass)') IS NULL THEN false "
        "ELSE has_function_privilege('pgstatindex(regclass)', 'execute') "
        "AND has_function_privilege('pgstattuple_approx(regclass)', 'execute') END"
    )
    return bool((await conn.execute(query)).scalar_one())


def _index_estimate(reltuples: float, key_width: float | None, size: int) -> float | None:
    """Btree bloat from the expected size of its leaf level (None without statistics)."""
    if key_width is None or reltuples is None or reltuples < 0 or size <= PAGE_BYTES:
        return None
    per_page = (PAGE_BYTES - 24 - 16) * BTREE_FILLFACTOR  # page header, btree special space
    expected = (
        1 + math.ceil(reltuples * (float(key_width) + INDEX_TUPLE_OVERHEAD) / per_page)
    ) * PAGE_BYTES
    return max(0.0, 1 - expected / size)


async def measure(conn: AsyncConnection) -> Snapshot:
    """Sizes, tuples, (auto)vacuum/analyze times, bloat, validity and daily partitions of the
    current schema's tables and indexes."""
    exact = await has_pgstattuple(conn)
    objects: list[ObjectStats] = []
    tables = text(TABLES.format(table_bloat=TABLE_BLOAT if exact else "NULL"))
    for row in (await conn.execute(tables)).mappings():
        partitioned = row["relkind"] == "p"
        if exact and not partitioned:
            bloat, source = float(row["bloat_percent"]) / 100, "pgstattuple"
        else:
            total = (row["n_live_tup"] or 0) + (row["n_dead_tup"] or 0)
            bloat = None if partitioned or not total else row["n_dead_tup"] / total
            source = None if bloat is None else "estimate"
        objects.append(
            ObjectStats(
                name=row["name"],
                kind="partitioned table" if partitioned else "table",
                size_bytes=None if partitioned else row["size_bytes"],
                live_tuples=row["n_live_tup"],
                dead_tuples=row["n_dead_tup"],
                bloat=bloat,
                bloat_source=source,
                last_vacuum=row["last_vacuum"],
                last_autovacuum=row["last_autovacuum"],
                last_analyze=row["last_analyze"],
                last_autoanalyze=row["last_autoanalyze"],
            )
        )
    indexes = text(INDEXES.format(leaf_density=LEAF_DENSITY if exact else "NULL"))
    for row in (await conn.execute(indexes)).mappings():
        density = row["leaf_density"]
        if density is not None and not math.isnan(density):
            bloat, source = max(0.0, 1 - density / 100 / BTREE_FILLFACTOR), "pgstattuple"
        elif row["method"] == "btree" and row["valid"]:
            bloat = _index_estimate(row["reltuples"], row["key_width"], row["size_bytes"])
            source = None if bloat is None else "estimate"
        else:
            bloat, source = None, None
        objects.append(
            ObjectStats(
                name=row["name"],
                kind="index",
                table=row["table_name"],
                size_bytes=row["size_bytes"],
                bloat=bloat,
                bloat_source=source,
                valid=row["valid"],
                method=row["method"],
            )
        )
    partitions = []
    for row in (await conn.execute(PARTITIONS)).mappings():
        parsed = partition_day(row["name"])
        if parsed is None:
            continue
        state = (
            "detached" if row["parent"] is None else "detaching" if row["pending"] else "attached"
        )
        partitions.append(Partition(parsed[0], row["name"], parsed[1], state))
    return Snapshot(
        "postgresql", datetime.now(UTC), objects, sorted(partitions, key=lambda p: p.name)
    )


TIMEOUT_SQLSTATES = {"55P03", "57014"}  # lock_not_available, query_canceled (statement_timeout)


def is_timeout(exc: BaseException) -> bool:
    """Whether ``exc`` is a lock or statement timeout (the step is left for the next run)."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in TIMEOUT_SQLSTATES
