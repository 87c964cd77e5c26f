"""Composition shared by the collection flows: configuration, per-venue steps, ledger artifact.

A venue step is: fetch (a retried task) -> store (rows, quarantine and ledger in one transaction).
A step that still fails after its retries writes a ``failed`` ledger row and is reported; the other
venues go on, and the flow run ends Failed once every venue is done.

Large task inputs (market lists, batches, row lists) go in Prefect's ``quote``: the engine then
does not walk them looking for futures and states before each task run, a walk that took about
three quarters of a 3 x 300 collection cycle's wall time (docs/benchmarks.md).

With ``PERPFLOW_DASK_ADDRESS`` set, the exchange tasks of the fan-out (fetch and parse, the CPU-heavy
part) run on a Dask cluster through prefect-dask's ``DaskTaskRunner`` (one per flow run, closed with
the run's scope); storing stays in the flow's process.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

from prefect.artifacts import acreate_table_artifact
from prefect.events import emit_event
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote
from prefect.utilities.callables import get_call_parameters
from prefect_dask import DaskTaskRunner
from pydantic import SecretStr
from sqlalchemy import Table

from blocks import ExchangeBlock, MarketDatabase
from perpflow import circuit
from perpflow.exchanges import offline_profile, unmatched_patterns
from perpflow.normalize import Batch, instrument_rows
from perpflow.scope import borrow
from perpflow.settings import ExchangeConfig, Settings, check_database_url, load_settings
from perpflow.store import LedgerEntry, run_engine
from tasks.exchange import budgeted, load_markets, retrying
from tasks.store import record_failure, store_batch, upsert_instruments

LEDGER_COLUMNS = (
    "exchange",
    "dataset",
    "status",
    "requested",
    "received",
    "stored",
    "duplicates",
    "quarantined",
    "failed",
    "attempts",
    "latency_ms",
    "error",
)


class VenueStepsFailed(RuntimeError):
    """Raised at the end of a collection flow run when any venue step failed after retries."""


class MarketDatabaseError(RuntimeError):
    """A step's write to the market database failed (its cause chained): the ledger and the log
    then say it was the database, not the venue."""


class EmptySelection(ValueError):
    """A venue's configuration selects no perpetual (patterns that match nothing, contract types
    the venue does not list): recorded as ledger status ``empty``, a warning, not a failure."""


@dataclass(frozen=True)
class RunContext:
    """What every step of one collection run needs: settings, the database URL, the run id."""

    settings: Settings
    database_url: SecretStr
    run_id: str
    venues: list[ExchangeConfig]
    markets: dict[str, dict[str, Any]] = field(default_factory=dict)

    def exchange_task(self, task_, venue: ExchangeConfig | None = None, calls: int = 0):
        """``task_`` with the configured retry count and backoff for exchange calls, and (with
        ``venue``) a timeout for the ``calls`` requests it may make; awaited in the flow's
        process, or on the run's Dask cluster when ``dask_address`` is set."""
        configured = retrying(task_, self.settings.exchange_retries, self.settings.retry_backoff_seconds)
        if venue is not None:
            configured = budgeted(configured, venue, calls)
        if not self.settings.dask_address:
            return configured
        return partial(_on_dask, self.settings, configured)


def _start_dask_runner(settings: Settings) -> DaskTaskRunner:
    if settings.dask_address == "local":
        runner = DaskTaskRunner(
            cluster_kwargs={"n_workers": settings.dask_workers, "dashboard_address": None}
        )
    else:
        runner = DaskTaskRunner(address=settings.dask_address)
    return runner.__enter__()


async def _stop_dask_runner(runner: DaskTaskRunner) -> None:
    await asyncio.to_thread(runner.__exit__, None, None, None)


async def _on_dask(settings: Settings, task_, *args: Any, **kwargs: Any) -> Any:
    """Run ``task_(*args, **kwargs)`` on the run's Dask cluster and return its result (or raise
    its exception once its retries are spent)."""
    start = partial(_start_dask_runner, settings)
    async with borrow(f"dask:{settings.dask_address}", start, _stop_dask_runner) as runner:
        # Dask's graph packing turns a ``quote`` (a named tuple) into a plain tuple: unwrap it.
        parameters = {
            name: value.unquote() if isinstance(value, quote) else value
            for name, value in get_call_parameters(task_.fn, args, kwargs).items()
        }
        future = await asyncio.to_thread(_submit, runner, task_, parameters)
        return await asyncio.to_thread(future.result)


_CONNECTING = threading.Lock()


def _submit(runner: DaskTaskRunner, task_, parameters: dict[str, Any]):
    # The runner makes its client (and a 'local' cluster) on first use, unguarded: venues submitting
    # together would each make one. The first caller makes it; the others wait and reuse it.
    with _CONNECTING:
        runner.client  # noqa: B018 - the property connects
    return runner.submit(task_, parameters)


async def resolve_run(exchanges: list[str] | None, database: str | None) -> RunContext:
    """Build the run's configuration: settings from the environment (validated: a bad value
    raises pydantic's ``ValidationError`` naming field and value), venues from the named
    ``perpflow-exchange`` blocks (else the settings' enabled exchanges) and the database URL from
    the named ``perpflow-market-database`` block (else ``PERPFLOW_DATABASE_URL``)."""
    settings = load_settings()
    if exchanges:
        blocks = [await ExchangeBlock.aload(name) for name in exchanges]
        venues = [block.venue() for block in blocks]
        venues = [venue for venue in venues if venue.enabled]
    else:
        venues = settings.enabled_exchanges
    url = await database_url(settings.database_url, database)
    labels = [venue.label for venue in venues]
    if len(set(labels)) != len(labels):
        raise ValueError(f"exchanges: venue labels must be unique, got {labels!r}")
    run_id = str(flow_run.id or uuid.uuid4())
    return RunContext(settings, url, run_id, venues)


async def database_url(default: SecretStr, database: str | None) -> SecretStr:
    """The URL of the named ``perpflow-market-database`` block (checked), else ``default`` (a
    settings URL, already checked by its validator)."""
    if not database:
        return default
    url = (await MarketDatabase.aload(database)).url
    check_database_url(url.get_secret_value())
    return url


async def venue_markets(ctx: RunContext, venue: ExchangeConfig) -> dict[str, dict[str, Any]]:
    """The venue's selected perpetuals (cached task) with their instrument rows upserted.

    Logs a warning for each ``symbols`` pattern that matched nothing; raises ``EmptySelection``
    when nothing is selected at all."""
    if venue.label in ctx.markets:
        return ctx.markets[venue.label]
    markets = await ctx.exchange_task(load_markets)(venue)
    ctx.markets[venue.label] = markets
    unmatched = unmatched_patterns(markets, venue.symbols)
    if not markets:
        raise EmptySelection(
            f"{venue.label}: no perpetual selected (symbols={list(venue.symbols)!r}, "
            f"contract_types={list(venue.contract_types)!r})"
        )
    if unmatched:
        get_run_logger().warning("%s: symbols %s matched no perpetual", venue.label, unmatched)
    rows = instrument_rows(venue.label, markets, int(datetime.now(UTC).timestamp() * 1000))
    try:
        await upsert_instruments(ctx.database_url, venue.label, quote(rows))
    except Exception as exc:
        raise MarketDatabaseError("market database: recording instruments failed") from exc
    return markets


async def run_step(
    ctx: RunContext,
    venue: ExchangeConfig,
    table: Table,
    fetch: Callable[[], Awaitable[tuple[Batch, float]]],
) -> dict[str, Any] | None:
    """Fetch and store one (venue, dataset); returns the ledger figures as a dict, or None when
    the venue's configuration does not want the dataset (``datasets``).

    Never raises for a venue failure (only cancellation goes through), so one venue's trouble
    never ends the run's other steps (nor closes their clients mid-fetch). A dataset the venue
    cannot serve through ccxt is recorded ``unsupported`` without a call; a configuration that
    selects nothing ``empty``; a step whose fetch, parse or store failed after its retries
    ``failed``, with the error class and message (``describe``) and what it meant to fetch (the
    selected symbols) counted as failed; a step where only some symbols failed ``partial``
    (their errors in ``failed_symbols``), or ``failed`` when every symbol did. When even the
    ledger row cannot be written (the database down past the store's retries), the figures are
    still returned and logged, their ``error`` saying that the row is missing.
    """
    fetch, skipped = await circuit_gate(ctx, venue, table, fetch)
    if skipped is not None:
        return skipped
    dataset = table.name
    if not venue.wants(dataset):
        return None
    started = datetime.now(UTC)
    try:
        return await _attempt(ctx, venue, table, fetch, started)
    except EmptySelection as exc:
        get_run_logger().warning("%s", exc)
        entry = LedgerEntry(ctx.run_id, venue.label, dataset, "empty", started, datetime.now(UTC),
                            None, str(exc))
        return await _record(ctx, entry, 0)
    except Exception as exc:  # noqa: BLE001 - one venue's trouble stays that venue's trouble
        get_run_logger().error("%s %s failed after retries: %s", venue.label, dataset,
                               describe(exc))
        attempts = ctx.settings.exchange_retries + 1 if getattr(exc, "transient", False) else 1
        entry = LedgerEntry(ctx.run_id, venue.label, dataset, "failed", started,
                            datetime.now(UTC), None, describe(exc), attempts)
        return await _record(ctx, entry, await _meant_to_fetch(ctx, venue))


async def _meant_to_fetch(ctx: RunContext, venue: ExchangeConfig) -> int:
    """The symbols a failed step meant to fetch: this run's selection, or, when the market list
    itself could not be loaded, the venue's active instruments the store knows (0 only when the
    store cannot be read either), so that a failed row still shows what was lost."""
    if venue.label in ctx.markets:
        return len(ctx.markets[venue.label])
    try:
        async with run_engine(ctx.database_url.get_secret_value()) as engine:
            return await circuit.known_instruments(engine, venue.label)
    except Exception:  # noqa: BLE001 - the failure being recorded may be the database's own
        return 0


# -- per-venue circuit breaker (perpflow.circuit) ----------------------------------------------
CIRCUIT_OPENED = "perpflow.venue.circuit_opened"
CIRCUIT_CLOSED = "perpflow.venue.circuit_closed"
Fetch = Callable[[], Awaitable[tuple[Batch, float]]]


def _breaker(settings: Settings) -> circuit.Breaker:
    return circuit.Breaker(settings.circuit_failures, settings.circuit_cooldown_seconds)


async def circuit_gate(
    ctx: RunContext, venue: ExchangeConfig, table: Table, fetch: Fetch
) -> tuple[Fetch, dict[str, Any] | None]:
    """The venue's circuit breaker around one step (called first by ``run_step``).

    Returns ``(fetch, None)`` when the venue may be called (closed, or this caller probes a
    half-open circuit): the returned ``fetch`` records its outcome in ``venue_circuits`` (a
    failure: it raised after its retries, or every symbol failed; ``EmptySelection`` counts as
    an answer) and emits ``perpflow.venue.circuit_opened`` / ``circuit_closed`` on the
    transitions this caller made. Returns ``(fetch, ledger figures)`` when the circuit is open:
    no request is made and the step's ledger row has status ``circuit_open`` (``requested`` =
    the venue's known active instruments, all ``failed``). Datasets the venue does not want or
    cannot serve pass through untouched. When the circuit state cannot be read (database
    trouble) the venue is called, with a warning."""
    dataset = table.name
    if not venue.wants(dataset) or not offline_profile(venue).plans[dataset].supported:
        return fetch, None
    started = datetime.now(UTC)
    try:
        async with run_engine(ctx.database_url.get_secret_value()) as engine:
            decision = await circuit.admit(engine, venue.label, _breaker(ctx.settings), started)
            if decision == circuit.SKIP:
                return fetch, await _skip_open(ctx, engine, venue, dataset, started)
    except Exception as exc:  # noqa: BLE001 - the breaker never stops a venue from being called
        get_run_logger().warning("%s: circuit state unavailable (%s); calling the venue",
                                 venue.label, type(exc).__name__)
        return fetch, None
    if decision == circuit.PROBE:
        get_run_logger().info("%s: circuit half-open, probing with %s", venue.label, dataset)

    async def guarded() -> tuple[Batch, float]:
        try:
            batch, latency = await fetch()
        except EmptySelection:
            await _circuit_outcome(ctx, venue, None)
            raise
        except Exception as exc:
            await _circuit_outcome(ctx, venue, f"{type(exc).__name__}: {exc}")
            raise
        down = bool(batch.failed) and not batch.received
        error = f"every symbol failed, e.g. {next(iter(batch.failed.values()))}" if down else None
        await _circuit_outcome(ctx, venue, error)
        return batch, latency

    return guarded, None


async def _skip_open(
    ctx: RunContext, engine, venue: ExchangeConfig, dataset: str, started: datetime
) -> dict[str, Any]:
    state = await circuit.read_circuit(engine, venue.label)
    due = state.probe_due(_breaker(ctx.settings), started)
    note = (f"venue down: circuit {state.state} since {_iso(state.down_since)} after "
            f"{ctx.settings.circuit_failures} consecutive failed steps; next probe from "
            f"{_iso(due)}; last error: {state.last_error}")
    entry = LedgerEntry(ctx.run_id, venue.label, dataset, circuit.CIRCUIT_OPEN, started,
                        datetime.now(UTC), None, note, 0)
    counts = await circuit.record_skipped(engine, entry)
    get_run_logger().warning("%s %s skipped: %s", venue.label, dataset, note)
    return _outcome(entry, counts.__dict__)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


async def _circuit_outcome(ctx: RunContext, venue: ExchangeConfig, error: str | None) -> None:
    """Record a step's outcome for the venue's circuit (``error`` None: success) and emit the
    event of a transition this call made; a database error here is logged, never raised."""
    now = datetime.now(UTC)
    breaker = _breaker(ctx.settings)
    try:
        async with run_engine(ctx.database_url.get_secret_value()) as engine:
            if error is None:
                was = await circuit.note_success(engine, venue.label, now)
            else:
                was = await circuit.note_failure(engine, venue.label, breaker, now, error)
    except Exception as exc:  # noqa: BLE001 - bookkeeping must not fail the step
        get_run_logger().warning("%s: circuit state not recorded (%s)", venue.label,
                                 type(exc).__name__)
        return
    if was is None:
        return
    if error is None:
        down = (now - was.down_since).total_seconds() if was.down_since else None
        event, payload = CIRCUIT_CLOSED, {"down_since": _iso(was.down_since), "down_seconds": down}
        get_run_logger().warning("%s: circuit closed, venue answers again", venue.label)
    else:
        event = CIRCUIT_OPENED
        payload = {"failures": was.failures, "cooldown_seconds": breaker.cooldown_s,
                   "error": error}
        get_run_logger().error("%s: circuit opened after %d consecutive failed steps: %s",
                               venue.label, was.failures, error)
    emit_event(
        event=event,
        resource={"prefect.resource.id": f"perpflow.venue.{venue.label}",
                  "prefect.resource.name": venue.label, "perpflow.exchange": venue.label},
        related=[{"prefect.resource.id": f"prefect.flow-run.{ctx.run_id}",
                  "prefect.resource.role": "flow-run"}],
        payload={"exchange": venue.label, **payload},
    )


async def _attempt(
    ctx: RunContext,
    venue: ExchangeConfig,
    table: Table,
    fetch: Callable[[], Awaitable[tuple[Batch, float]]],
    started: datetime,
) -> dict[str, Any]:
    """``run_step``'s work: raises whatever the fetch, the parse or the store raised."""
    dataset = table.name
    plan = offline_profile(venue).plans[dataset]
    if not plan.supported:
        entry = LedgerEntry(ctx.run_id, venue.label, dataset, "unsupported", started,
                            datetime.now(UTC), None, f"not offered by ccxt: {plan.reason}")
        return await _record(ctx, entry, 0)
    batch, latency = await fetch()
    status = _status(batch)
    failed = (f"{len(batch.failed)} symbol(s) failed, e.g. " + next(iter(batch.failed.values()))
              if batch.failed else None)
    note = "; ".join(filter(None, [failed, *batch.notes, _unmatched_note(venue, ctx)])) or None
    entry = LedgerEntry(ctx.run_id, venue.label, dataset, status, started, datetime.now(UTC),
                        latency, note, batch.attempts)
    try:
        result = await store_batch(ctx.database_url, table, quote(batch), entry)
    except Exception as exc:
        raise MarketDatabaseError(f"market database: storing {dataset} failed") from exc
    return _outcome(entry, result.__dict__)


ERROR_CHARS = 2000


def describe(exc: BaseException) -> str:
    """A readable one-line cause of ``exc`` for the ledger and the log: ``'Class: message'``
    (``'Class (no message)'`` for an exception without one, such as a bare ``TimeoutError()``),
    followed by its cause's when it was raised from another, at most ``ERROR_CHARS`` long (NUL
    bytes written ``\\u0000``: the text goes to the ledger, the log and the run's state)."""
    parts = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 3:
        message = " ".join(str(seen).replace("\x00", "\\u0000").split())
        parts.append(f"{type(seen).__name__}: {message}" if message
                     else f"{type(seen).__name__} (no message)")
        seen = seen.__cause__
    text = "; caused by ".join(parts)
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


def _status(batch: Batch) -> str:
    """``ok``; ``partial`` when some symbols failed (the rest stored); ``failed`` when all did."""
    if not batch.failed:
        return "ok"
    return "partial" if batch.received else "failed"


def _unmatched_note(venue: ExchangeConfig, ctx: RunContext) -> str | None:
    unmatched = unmatched_patterns(ctx.markets.get(venue.label, {}), venue.symbols)
    return f"symbols {unmatched!r} matched no perpetual" if unmatched else None


async def _record(ctx: RunContext, entry: LedgerEntry, requested: int) -> dict[str, Any]:
    """Write the ledger row of a step that stored nothing and return its figures; when the row
    cannot be written, log that (error level) and return the figures with ``error`` saying so."""
    failed = requested if entry.status == "failed" else 0
    counts = {"requested": requested, "received": 0, "stored": 0, "duplicates": 0,
              "quarantined": 0, "failed": failed}
    try:
        await record_failure(ctx.database_url, entry, requested)
    except Exception as exc:  # noqa: BLE001 - the outcome is still reported
        lost = f"ledger row not written: {describe(exc)}"
        get_run_logger().error("%s %s %s (%s): %s", entry.exchange, entry.dataset, entry.status,
                               entry.error, lost)
        entry = replace(entry, error="; ".join(filter(None, [entry.error, lost])))
    return _outcome(entry, counts)


def _outcome(entry: LedgerEntry, counts: dict[str, int]) -> dict[str, Any]:
    latency = None if entry.latency_ms is None else round(entry.latency_ms, 1)
    values = {**counts, **entry.__dict__, "latency_ms": latency}
    return {column: values[column] for column in LEDGER_COLUMNS}


async def publish_ledger(key: str, ctx: RunContext, outcomes: list[dict[str, Any]]) -> None:
    """Publish the run's ledger figures as a table artifact under a stable ``key``, then raise
    ``VenueStepsFailed`` if any step failed (so the run ends Failed for the UI and automations)."""
    await acreate_table_artifact(
        table=outcomes,
        key=key,
        description=f"Collection ledger of run {ctx.run_id}: one row per (exchange, dataset); "
        "requested = stored + duplicates + quarantined + failed for every row; status ok, "
        "partial (some symbols failed), failed, unsupported (the venue has no such call in "
        "ccxt), empty (nothing selected) or circuit_open (venue down: skipped, all failed).",
    )
    failed = [f"{o['exchange']} {o['dataset']}: {o['error']}" for o in outcomes if o["status"] == "failed"]
    if failed:
        raise VenueStepsFailed(f"{len(failed)} venue step(s) failed: " + "; ".join(failed))
