"""Per-venue circuit breaker, its state in the market database (``venue_circuits``) so that every
worker of every flow sees the same state.

States: ``closed`` (the venue is called), ``open`` (the venue is down: its steps are skipped
without a request), ``half_open`` (the cool-down is over: one caller, the one whose atomic claim
succeeded, probes the venue; the others keep skipping). Transitions:

- closed -> open after ``threshold`` consecutive failed steps (``note_failure`` returns True for
  the one caller that opened it: that caller announces the outage);
- open -> half_open when a caller is admitted after ``cooldown_s`` (``admit`` returns ``PROBE``);
  a probe whose worker died is claimed again one cool-down later;
- half_open -> closed on a successful step (``note_success`` returns True for the one caller that
  closed it: that caller announces the recovery); half_open -> open on a failed one (a new
  cool-down; the outage goes on, nothing is announced again).

A "step" is one (venue, dataset) fetch of a collection flow; a failure is the venue's (the fetch
failed after its retries, or every symbol did), never the database's. Times are timezone-aware
UTC datetimes. Every transition is one conditional ``UPDATE`` whose ``WHERE`` re-checks the
state it leaves, so two workers racing never both open, probe or close a circuit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from perpflow.store.schema import instruments, venue_circuits
from perpflow.store.writes import LedgerEntry, StoreResult, _insert, _write_ledger

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
CALL, PROBE, SKIP = "call", "probe", "skip"
CIRCUIT_OPEN = "circuit_open"  # the ledger status of a step skipped because its venue is down


@dataclass(frozen=True)
class Breaker:
    """The breaker's settings: ``threshold`` consecutive failed steps open the circuit; it stays
    open ``cooldown_s`` seconds before a probe."""

    threshold: int
    cooldown_s: float


@dataclass(frozen=True)
class Circuit:
    """One venue's circuit as stored: ``state``; ``failures`` (consecutive failed steps while
    closed); ``down_since`` (when it opened from closed; kept across re-opens, None when
    closed); ``opened_at`` (start of the current cool-down); ``probe_at`` (when the current probe
    was claimed); ``last_error`` (``'ErrorClass: message'`` of the newest failure)."""

    exchange: str
    state: str = CLOSED
    failures: int = 0
    down_since: datetime | None = None
    opened_at: datetime | None = None
    probe_at: datetime | None = None
    last_error: str | None = None

    def probe_due(self, breaker: Breaker, now: datetime) -> datetime | None:
        """When a probe may next be claimed (None for a closed circuit)."""
        since = self.probe_at if self.state == HALF_OPEN else self.opened_at
        if self.state == CLOSED or since is None:
            return None
        return since + timedelta(seconds=breaker.cooldown_s)


def decide(circuit: Circuit, breaker: Breaker, now: datetime) -> str:
    """What a caller may do now: ``CALL`` (closed), ``PROBE`` (the cool-down, or a stale probe's,
    is over: try to claim it), else ``SKIP``."""
    if circuit.state == CLOSED:
        return CALL
    due = circuit.probe_due(breaker, now)
    return PROBE if due is not None and now >= due else SKIP


async def read_circuit(conn: AsyncConnection | AsyncEngine, exchange: str) -> Circuit:
    """``exchange``'s circuit (a closed one when no row exists yet)."""
    query = select(venue_circuits).where(venue_circuits.c.exchange == exchange)
    if isinstance(conn, AsyncEngine):
        async with conn.connect() as connection:
            row = (await connection.execute(query)).mappings().first()
    else:
        row = (await conn.execute(query)).mappings().first()
    if row is None:
        return Circuit(exchange)
    return Circuit(**{k: v for k, v in row.items() if k != "updated_at"})


async def admit(engine: AsyncEngine, exchange: str, breaker: Breaker, now: datetime) -> str:
    """``CALL``, ``PROBE`` (this caller won the claim: the circuit is now ``half_open``) or
    ``SKIP`` for a step of ``exchange`` starting ``now``."""
    circuit = await read_circuit(engine, exchange)
    decision = decide(circuit, breaker, now)
    if decision != PROBE:
        return decision
    table = venue_circuits.c
    # Claim: only if nobody changed the circuit since it was read.
    seen = table.probe_at == circuit.probe_at if circuit.state == HALF_OPEN else (
        table.opened_at == circuit.opened_at
    )
    async with engine.begin() as conn:
        claimed = await conn.execute(
            update(venue_circuits)
            .where(table.exchange == exchange, table.state == circuit.state, seen)
            .values(state=HALF_OPEN, probe_at=now, updated_at=now)
        )
    return PROBE if claimed.rowcount == 1 else SKIP


async def note_success(engine: AsyncEngine, exchange: str, now: datetime) -> Circuit | None:
    """Record a successful step of ``exchange``: failures reset; an open or half-open circuit
    closes. Returns the circuit as it was when this call closed it (None otherwise)."""
    table = venue_circuits.c
    async with engine.begin() as conn:
        before = await read_circuit(conn, exchange)
        closed = await conn.execute(
            update(venue_circuits)
            .where(table.exchange == exchange, table.state != CLOSED)
            .values(state=CLOSED, failures=0, down_since=None, opened_at=None, probe_at=None,
                    updated_at=now)
        )
        if closed.rowcount == 1:
            return before
        await conn.execute(
            update(venue_circuits)
            .where(table.exchange == exchange, table.failures != 0)
            .values(failures=0, updated_at=now)
        )
    return None


async def note_failure(
    engine: AsyncEngine, exchange: str, breaker: Breaker, now: datetime, error: str
) -> Circuit | None:
    """Record a failed step of ``exchange`` (``error``: ``'ErrorClass: message'``, no secrets).
    A closed circuit counts it and opens at ``breaker.threshold``; a half-open one (a failed
    probe) opens again for a new cool-down. Returns the circuit as this call opened it from
    closed (None otherwise: still closed, re-opened, or opened by another caller)."""
    table = venue_circuits.c
    async with engine.begin() as conn:
        await conn.execute(
            _insert(conn)(venue_circuits)
            .values(exchange=exchange, state=CLOSED, failures=0, updated_at=now)
            .on_conflict_do_nothing(index_elements=["exchange"])
        )
        await conn.execute(
            update(venue_circuits)
            .where(table.exchange == exchange, table.state == HALF_OPEN)
            .values(state=OPEN, opened_at=now, probe_at=None, last_error=error, updated_at=now)
        )
        await conn.execute(
            update(venue_circuits)
            .where(table.exchange == exchange, table.state == CLOSED)
            .values(failures=table.failures + 1, last_error=error, updated_at=now)
        )
        opened = await conn.execute(
            update(venue_circuits)
            .where(table.exchange == exchange, table.state == CLOSED,
                   table.failures >= breaker.threshold)
            .values(state=OPEN, down_since=now, opened_at=now, updated_at=now)
        )
        return await read_circuit(conn, exchange) if opened.rowcount == 1 else None


async def known_instruments(engine: AsyncEngine, exchange: str) -> int:
    """How many active instruments of ``exchange`` the store knows (``instruments``): what a
    skipped step would have asked for."""
    async with engine.connect() as conn:
        query = select(func.count()).where(
            instruments.c.exchange == exchange, instruments.c.active.is_(True)
        )
        return int((await conn.execute(query)).scalar_one())


async def record_skipped(engine: AsyncEngine, entry: LedgerEntry) -> StoreResult:
    """Write the ledger row of a step skipped because its venue's circuit is open (``entry.status``
    ``circuit_open``): ``requested`` is the venue's known active instruments, all of them
    ``failed`` (nothing was asked, nothing stored), so ``requested = stored + duplicates +
    quarantined + failed`` holds and the loss is visible, explained by the status as "venue
    down". Returns the counts written."""
    requested = await known_instruments(engine, entry.exchange)
    result = StoreResult(requested, 0, 0, 0, 0, requested)
    async with engine.begin() as conn:
        await _write_ledger(conn, entry, result)
    return result
