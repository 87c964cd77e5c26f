"""Idempotent writes: market data inserted by natural key, quarantine and ledger in one transaction.

PostgreSQL: rows are COPied (asyncpg binary COPY) straight into the table; if any key is already
stored, the COPY fails as a whole and the batch goes through a temporary staging table instead
(COPY, then ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``). ``write_new`` does that with a
transaction of its own (optimistic: the failed transaction is rolled back and a second one
stages), so new data, the common case, costs one COPY and one commit: the fastest idempotent way
measured by ``perpflow.bench`` (figures in docs/benchmarks.md). ``insert_new`` does it inside the
caller's transaction, behind a savepoint. SQLite: ``INSERT ... ON CONFLICT DO NOTHING`` of the
whole batch. Either
way a repeated batch stores nothing twice, and the number of rows actually inserted is returned,
so duplicates are counted, not guessed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import String, Table, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from perpflow.normalize import Batch
from perpflow.store.partitions import ensure_row_partitions
from perpflow.store.schema import (
    collection_ledger,
    OBSERVED,
    instrument_key,
    instruments,
    observation_keys,
    quarantine,
    quarantine_digest,
)

COPY_SAVEPOINT = "perpflow_copy"
T = TypeVar("T")


@dataclass(frozen=True)
class LedgerEntry:
    """One collection step of one venue: what the ledger row says besides the counts.

    ``status`` is ``'ok'``, ``'partial'`` (some symbols failed: ``failed`` counts them),
    ``'failed'`` (the step failed after its retries, or every symbol did), ``'unsupported'``
    (the venue cannot serve the dataset through ccxt: nothing was expected) or ``'empty'`` (the
    venue's selection holds no perpetual: a configuration to look at); ``error`` the failure
    message or the explanation (no credentials); ``latency_ms`` the venue's response time for
    the step; ``attempts`` the fetch task's runs (1 + retries used); times are timezone-aware UTC.
    """

    run_id: str
    exchange: str
    dataset: str
    status: str
    started_at: datetime
    finished_at: datetime
    latency_ms: float | None = None
    error: str | None = None
    attempts: int = 1


@dataclass(frozen=True)
class StoreResult:
    """Counts of one step: ``stored + duplicates + quarantined == received`` and ``requested ==
    received + failed`` (``failed``: what the venue could not be asked for or did not answer)."""

    requested: int
    received: int
    stored: int
    duplicates: int
    quarantined: int
    failed: int = 0


def _insert(conn: AsyncConnection):
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert


KEY = "instrument_key"
OBS_KEY = "obs_key"
DERIVED = (KEY, OBS_KEY)


def given_columns(table: Table) -> list[str]:
    """The columns a row for ``table`` brings: all but the keys the store derives,
    ``instrument_key`` (from ``exchange`` and ``symbol``, ``schema.instrument_key``) and
    ``obs_key`` (from the ``OBSERVED`` value columns, ``schema.observation_keys``)."""
    return [column.name for column in table.columns if column.name not in DERIVED]


def _with_derived(
    table: Table, columns: list[str], records: list[tuple]
) -> tuple[list[str], list[tuple]]:
    """``records`` (values in ``columns`` order) with the keys the store derives appended:
    ``(names appended, new records)``; nothing appended when ``table`` derives none."""
    if KEY not in table.c:
        return [], records
    exchange, symbol = columns.index("exchange"), columns.index("symbol")
    keys = [instrument_key(record[exchange], record[symbol]) for record in records]
    if OBS_KEY not in table.c:
        return [KEY], [(*record, key) for record, key in zip(records, keys)]
    observed = itemgetter(*(columns.index(name) for name in OBSERVED[table.name]))
    digests = observation_keys(table.name, map(observed, records))
    return list(DERIVED), [(*r, k, d) for r, k, d in zip(records, keys, digests)]


def keyed_rows(table: Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` as new dicts with the keys the store derives (``instrument_key``, and ``obs_key``
    where ``table`` has it), else ``rows`` themselves (the caller's dicts are never changed). A
    value column missing from a row counts as NULL in ``obs_key``."""
    if KEY not in table.c:
        return rows
    columns = given_columns(table)
    names, records = _with_derived(table, columns, [tuple(map(row.get, columns)) for row in rows])
    width = len(columns)
    return [{**row, **dict(zip(names, record[width:]))} for row, record in zip(rows, records)]


async def insert_new(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> int:
    """Insert ``rows`` into ``table``, skipping keys already stored; return how many were new.
    Tables keyed by ``instrument_key`` get it derived from each row's ``exchange`` and
    ``symbol``."""
    if not rows:
        return 0
    if conn.dialect.name == "postgresql":
        return await _copy_new(conn, table, rows)
    # Only key conflicts are skipped (``OR IGNORE`` would also drop NOT NULL violations silently);
    # sqlite3 sums an executemany's inserted rows into rowcount.
    statement = sqlite.insert(table).on_conflict_do_nothing()
    return (await conn.execute(statement, keyed_rows(table, rows))).rowcount


def copy_records(table: Table, rows: list[dict[str, Any]]) -> tuple[list[str], list[tuple]]:
    """``(column names, one tuple per row in that order)`` of ``rows`` for a COPY into ``table``:
    the ``given_columns`` (a column missing from a row is NULL), then the derived
    ``instrument_key`` and ``obs_key`` where ``table`` has them. (``itemgetter`` when every row
    has every column: about three times faster than a per-column ``dict.get``, which matters at
    500 rows a batch.)"""
    columns = given_columns(table)
    try:
        records = list(map(itemgetter(*columns), rows))
    except KeyError:
        records = [tuple(map(row.get, columns)) for row in rows]
    names, records = _with_derived(table, columns, records)
    return [*columns, *names], records


async def copy_into(conn: AsyncConnection, name: str, columns: list[str], records: list[tuple]) -> None:
    """Binary COPY of ``records`` into table ``name`` on ``conn``'s asyncpg connection (inside
    whatever transaction ``conn`` has open)."""
    raw = (await conn.get_raw_connection()).driver_connection
    await raw.copy_records_to_table(name, records=records, columns=columns)


async def _copy_new(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> int:
    """COPY ``rows`` into ``table`` after a savepoint (sent through SQLAlchemy, which opens the
    transaction first); on a duplicate key, roll back to it and stage instead. The savepoint is
    not released: COMMIT does that, and a round trip less per batch is measurably faster."""
    columns, records = copy_records(table, rows)
    await conn.exec_driver_sql(f"SAVEPOINT {COPY_SAVEPOINT}")
    try:
        await copy_into(conn, table.name, columns, records)
    except asyncpg.UniqueViolationError:
        await conn.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {COPY_SAVEPOINT}")
        return await _stage_insert(conn, table, rows)
    return len(rows)


async def _stage_insert(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> int:
    columns, records = copy_records(table, rows)
    stage = f"stage_{table.name}"
    # Through SQLAlchemy first, so that the transaction is open before the raw COPY.
    await conn.execute(
        text(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} "
            f"(LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
    )
    await copy_into(conn, stage, columns, records)
    names = ", ".join(f'"{c}"' for c in columns)
    result = await conn.execute(
        text(f"INSERT INTO {table.name} ({names}) SELECT {names} FROM {stage} ON CONFLICT DO NOTHING")
    )
    await conn.execute(text(f"TRUNCATE {stage}"))
    return result.rowcount


NUL = "\x00"
NUL_ESCAPED = "\\u0000"
NUL_NOTE = "NUL bytes (U+0000) escaped as the text \\u0000"


def without_nul(value: Any) -> tuple[Any, bool]:
    """``value`` (text, or a JSON-able structure of dicts, lists and scalars) with every NUL
    byte in its texts and keys replaced by the six characters ``\\u0000`` (PostgreSQL refuses
    NUL in ``text`` and ``jsonb``), and whether any was; the original is recoverable by replacing
    them back. Values without NUL are returned as they are (not copied)."""
    if isinstance(value, str):
        return (value.replace(NUL, NUL_ESCAPED), True) if NUL in value else (value, False)
    if isinstance(value, dict):
        items = [(without_nul(k), without_nul(v)) for k, v in value.items()]
        if not any(k[1] or v[1] for k, v in items):
            return value, False
        return {k[0]: v[0] for k, v in items}, True
    if isinstance(value, list | tuple):
        items = [without_nul(v) for v in value]
        if not any(changed for _, changed in items):
            return value, False
        return [v for v, _ in items], True
    return value, False


def _text_columns(table: Table) -> list[str]:
    return [c.name for c in table.columns if isinstance(c.type, String)]


def clean_rows(table: Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` for ``table`` with NUL bytes in their text columns (e.g. a venue's symbol)
    escaped as ``\\u0000`` (``without_nul``); rows without any are kept as they are."""
    names = _text_columns(table)
    cleaned = []
    for row in rows:
        if any(isinstance(row.get(n), str) and NUL in row[n] for n in names):
            texts = [n for n in names if isinstance(row.get(n), str)]
            row = {**row, **{n: without_nul(row[n])[0] for n in texts}}
        cleaned.append(row)
    return cleaned


def quarantine_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Quarantine records (``Batch.refuse``) ready to insert: NUL bytes in the payload and the
    texts escaped (the reason then says so) and each given its ``digest``
    (``schema.quarantine_digest``)."""
    rows = []
    for record in clean_rows(quarantine, records):
        payload, escaped = without_nul(record["payload"])
        reason = f"{record['reason']} ({NUL_NOTE})" if escaped else record["reason"]
        digest = quarantine_digest(
            record["exchange"], record["dataset"], record.get("symbol"), reason, payload
        )
        rows.append({**record, "payload": payload, "reason": reason, "digest": digest})
    return rows


async def insert_quarantine(conn: AsyncConnection, records: list[dict[str, Any]]) -> int:
    """Insert quarantine records (``quarantine_rows`` is applied), skipping those already held
    (same ``digest``: the same payload refused for the same reason before); returns how many
    were new."""
    if not records:
        return 0
    statement = _insert(conn)(quarantine).on_conflict_do_nothing(index_elements=["digest"])
    return (await conn.execute(statement, quarantine_rows(records))).rowcount


async def _write_ledger(
    conn: AsyncConnection,
    entry: LedgerEntry,
    result: StoreResult,
    failed_symbols: dict[str, str] | None = None,
    batch_id: str | None = None,
) -> None:
    values = {**entry.__dict__, **result.__dict__, "batch_id": batch_id,
              "error": without_nul(entry.error)[0],
              "failed_symbols": without_nul(failed_symbols or None)[0]}
    stmt = _insert(conn)(collection_ledger).values(values)
    keys = ("run_id", "exchange", "dataset")
    # A row without a batch (a failure) never replaces the row of a batch that was stored.
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={k: stmt.excluded[k] for k in values if k not in keys},
            where=None if batch_id else collection_ledger.c.batch_id.is_(None),
        )
    )


class _AlreadyStored(Exception):
    """Raised inside a batch's transaction when its own ledger row is already committed, to roll
    the repeat back; carries the counts that row holds."""

    def __init__(self, result: StoreResult):
        super().__init__("batch already stored")
        self.result = result


async def _committed(
    conn: AsyncConnection, entry: LedgerEntry, batch_id: str
) -> StoreResult | None:
    """The counts of the ledger row of batch ``batch_id`` of ``entry``'s step, if committed."""
    ledger = collection_ledger.c
    row = (
        await conn.execute(
            select(ledger.requested, ledger.received, ledger.stored, ledger.duplicates,
                   ledger.quarantined, ledger.failed).where(
                ledger.run_id == entry.run_id,
                ledger.exchange == entry.exchange,
                ledger.dataset == entry.dataset,
                ledger.batch_id == batch_id,
            )
        )
    ).first()
    return None if row is None else StoreResult(*row)


Then = Callable[[AsyncConnection, int], Awaitable[T]]


async def write_new(
    conn: AsyncConnection, table: Table, rows: list[dict[str, Any]], then: Then | None = None
) -> tuple[int, T | None]:
    """Insert the rows of ``rows`` whose keys are not stored yet, in a transaction of its own on
    ``conn`` (which must not be in one), and run ``then(conn, stored)`` in the same transaction;
    returns ``(stored, then's result)``.

    PostgreSQL, optimistically: ``then`` first (it opens the transaction), then one COPY straight
    into the table, no savepoint; only when a key is already stored does that transaction roll
    back, and a second one stages the rows (``INSERT ... ON CONFLICT DO NOTHING``) and runs
    ``then`` with the true count. Without ``then`` the COPY is its own transaction. New data, the
    common case, costs one COPY and one commit. SQLite: ``insert_new`` in one transaction.
    """
    if conn.dialect.name == "postgresql" and rows:
        try:
            async with conn.begin():
                outcome = None if then is None else await then(conn, len(rows))
                await copy_into(conn, table.name, *copy_records(table, rows))
            return len(rows), outcome
        except asyncpg.UniqueViolationError:
            async with conn.begin():
                stored = await _stage_insert(conn, table, rows)
                return stored, None if then is None else await then(conn, stored)
    async with conn.begin():
        stored = await insert_new(conn, table, rows)
        return stored, None if then is None else await then(conn, stored)


async def store_batch(engine: AsyncEngine, table: Table, batch: Batch, entry: LedgerEntry) -> StoreResult:
    """Store one normalized batch, its quarantine rows and its ledger row in one transaction
    (``write_new``); text columns and quarantine payloads have NUL bytes escaped
    (``without_nul``), and quarantine rows already held are not inserted again (the ledger's
    ``quarantined`` still counts every value this step refused).

    A retried call after a failure repeats nothing (the failed transaction left no trace, and the
    market rows are keyed). A retry after a commit whose acknowledgement was lost finds the
    ledger row of its own batch (``batch.batch_id``, recorded with the row) and returns the
    counts that row holds instead of counting its own rows as duplicates. Returns the counts
    written to the ledger. On PostgreSQL the daily partitions the rows need are made first
    (``perpflow.store.partitions``).
    """
    rows = clean_rows(table, batch.rows)
    await ensure_row_partitions(engine, table, rows)

    async def account(conn: AsyncConnection, stored: int) -> StoreResult:
        if stored < len(rows):  # rows already there: this very batch, committed before?
            earlier = await _committed(conn, entry, batch.batch_id)
            if earlier is not None:
                raise _AlreadyStored(earlier)
        await insert_quarantine(conn, batch.quarantine)
        result = StoreResult(
            requested=batch.requested + len(batch.failed),
            received=batch.received,
            stored=stored,
            duplicates=len(rows) - stored,
            quarantined=len(batch.quarantine),
            failed=len(batch.failed),
        )
        await _write_ledger(conn, entry, result, batch.failed, batch.batch_id)
        return result

    try:
        async with engine.connect() as conn:
            return (await write_new(conn, table, rows, account))[1]
    except _AlreadyStored as done:
        return done.result


async def record_failure(engine: AsyncEngine, entry: LedgerEntry, requested: int) -> None:
    """Write the ledger row of a step that stored nothing: ``requested`` is what it meant to
    fetch (symbols), all of it ``failed`` when ``entry.status`` is ``'failed'``; an
    ``'unsupported'`` or ``'empty'`` step expected nothing (pass 0). A row the step's batch
    already committed (a store whose acknowledgement was lost, then failed on retry) is kept:
    those rows are stored."""
    failed = requested if entry.status == "failed" else 0
    async with engine.begin() as conn:
        await _write_ledger(conn, entry, StoreResult(requested, 0, 0, 0, 0, failed))


async def upsert_instruments(engine: AsyncEngine, rows: list[dict[str, Any]]) -> None:
    """Insert new instruments; refresh the descriptive columns and ``last_seen`` of known ones
    (``first_seen`` is kept). Raises ``IntegrityError`` for an
    instrument whose ``instrument_key`` collides with another's (never seen: 64-bit digests)."""
    if not rows:
        return
    rows = keyed_rows(instruments, clean_rows(instruments, rows))
    async with engine.begin() as conn:
        stmt = _insert(conn)(instruments)
        keep = {"exchange", "symbol", "instrument_key", "first_seen"}
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["exchange", "symbol"],
                set_={c.name: stmt.excluded[c.name] for c in instruments.columns if c.name not in keep},
            ),
            rows,
        )
