"""Health probes and their classification: system (psutil), database (per dialect), freshness per
(venue, dataset), collection-ledger aggregates and run-history statistics.

Every probe returns ``Check`` values, each classified ``OK``/``WARN``/``CRIT`` against thresholds
from ``perpflow.settings.Settings``. No probe output contains the database URL or any other
secret: errors are reported by type and message with known secrets masked.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import case, distinct, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from perpflow.settings import Settings
from perpflow.store import (
    collection_ledger,
    funding_history,
    funding_intervals,
    funding_rates,
    instruments,
    tickers,
)
from perpflow.store.monitoring import OVERALL

OK, WARN, CRIT = "OK", "WARN", "CRIT"
NA = "n/a"  # nothing to judge: the venue does not offer the dataset, or it is not collected there
RANK = {NA: 0, OK: 0, WARN: 1, CRIT: 2}
FAILED_STATES = {"FAILED", "CRASHED"}


@dataclass(frozen=True)
class Check:
    """One health finding: ``name`` (dotted, e.g. ``freshness.okx.tickers``), ``status``,
    ``value`` in ``unit`` (``%``, ``ms``, ``s``, ``bytes``, ``count``, ``ratio``; None when not
    measurable) and a human-readable ``detail``."""

    name: str
    status: str
    value: float | None = None
    unit: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class RunRecord:
    """One flow run as the run-history statistics need it: ``name`` (deployment name, else flow
    name), Prefect ``state_type`` (``COMPLETED``, ``FAILED``, ``CRASHED``, ``RUNNING``...),
    ``late`` (started later than allowed, or in the Late state) and ``duration_s`` (total run
    time in seconds; None while not finished)."""

    name: str
    state_type: str
    late: bool
    duration_s: float | None


def level(value: float, warn: float, crit: float, *, higher_is_worse: bool = True) -> str:
    """``CRIT`` when ``value`` is at or past ``crit``, ``WARN`` at or past ``warn``, else ``OK``."""
    if not higher_is_worse:
        value, warn, crit = -value, -warn, -crit
    return CRIT if value >= crit else WARN if value >= warn else OK


def worst(checks: list[Check]) -> str:
    """The most severe status among ``checks`` (``OK`` for none)."""
    return max((c.status for c in checks), key=RANK.__getitem__, default=OK)


def redact(message: str, secrets: list[str]) -> str:
    """``message`` with each non-empty secret replaced by ``***`` (cut to 300 characters)."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return message[:300]


def percentile(values: list[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) of ``values`` with linear interpolation; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _existing(path: Path) -> Path:
    path = path.resolve()
    while not path.exists():
        path = path.parent
    return path


def system_checks(data_dir: Path, s: Settings) -> list[Check]:
    """CPU and memory use of the machine, disk use of the file system holding ``data_dir`` (its
    nearest existing parent) and this process's resident memory (psutil)."""
    disk = _existing(data_dir)
    cpu = psutil.cpu_percent(interval=0.2)
    memory = psutil.virtual_memory().percent
    used = psutil.disk_usage(str(disk)).percent
    rss = psutil.Process().memory_info().rss
    thresholds = (s.health_percent_warn, s.health_percent_crit)
    return [
        Check("system.cpu", level(cpu, *thresholds), cpu, "%", "CPU use of the machine"),
        Check(
            "system.memory", level(memory, *thresholds), memory, "%", "memory use of the machine"
        ),
        Check("system.disk", level(used, *thresholds), used, "%", f"disk use under {data_dir}"),
        Check("system.process_rss", OK, float(rss), "bytes", "resident memory of this process"),
    ]


async def _sizes(conn) -> list[Check]:
    if conn.dialect.name == "postgresql":
        rows = await conn.execute(
            text(
                "SELECT 'table', relname, pg_table_size(relid) FROM pg_stat_user_tables "
                "UNION ALL SELECT 'index', indexrelname, pg_relation_size(indexrelid) "
                "FROM pg_stat_user_indexes"
            )
        )
    else:
        rows = await conn.execute(
            text(
                "SELECT m.type, s.name, SUM(s.pgsize) FROM dbstat s "
                "JOIN sqlite_master m ON m.name = s.name GROUP BY m.type, s.name"
            )
        )
    return [
        Check(f"database.size.{kind}.{name}", OK, float(size), "bytes", f"{kind} {name}")
        for kind, name, size in rows
    ]


async def _postgres_checks(conn, s: Settings) -> list[Check]:
    connections = (
        await conn.execute(
            text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        )
    ).scalar_one()
    hit, read = (
        await conn.execute(
            text(
                "SELECT blks_hit, blks_read FROM pg_stat_database "
                "WHERE datname = current_database()"
            )
        )
    ).one()
    ratio = hit / (hit + read) if hit + read else 1.0
    long_running = (
        await conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE state <> 'idle' "
                "AND pid <> pg_backend_pid() AND now() - query_start > make_interval(secs => :secs)"
            ),
            {"secs": s.health_long_query_seconds},
        )
    ).scalar_one()
    waiting = (
        await conn.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted"))
    ).scalar_one()
    return [
        Check("database.connections", OK, float(connections), "count", "sessions on this database"),
        Check(
            "database.cache_hit_ratio",
            WARN if ratio < s.health_cache_hit_warn else OK,
            round(ratio, 4),
            "ratio",
            f"buffer cache hits / block reads (WARN below {s.health_cache_hit_warn})",
        ),
        Check(
            "database.long_queries",
            WARN if long_running else OK,
            float(long_running),
            "count",
            f"queries running longer than {s.health_long_query_seconds:g} s",
        ),
        Check(
            "database.lock_waits",
            WARN if waiting else OK,
            float(waiting),
            "count",
            "lock requests waiting to be granted",
        ),
    ]


async def database_checks(engine: AsyncEngine, s: Settings, secrets: list[str]) -> list[Check]:
    """Reachability and round-trip time (``SELECT 1``), size per table and index (PostgreSQL
    statistics views; SQLite ``dbstat``), and on PostgreSQL sessions, cache hit ratio,
    long-running queries and lock waits. An unreachable database is one ``CRIT`` check whose
    detail has the ``secrets`` masked; it never raises."""
    try:
        async with engine.connect() as conn:
            started = time.perf_counter()
            await conn.execute(text("SELECT 1"))
            rtt = (time.perf_counter() - started) * 1000
            checks = [
                Check(
                    "database.round_trip",
                    level(rtt, s.health_db_rtt_warn_ms, s.health_db_rtt_crit_ms),
                    round(rtt, 2),
                    "ms",
                    f"{conn.dialect.name} reachable; SELECT 1 round trip",
                )
            ]
            try:
                checks += await _sizes(conn)
            except Exception as exc:  # noqa: BLE001 - e.g. SQLite built without dbstat
                checks.append(
                    Check(
                        "database.size", OK, None, None, f"sizes unavailable: {type(exc).__name__}"
                    )
                )
                await conn.rollback()
            if conn.dialect.name == "postgresql":
                checks += await _postgres_checks(conn, s)
            return checks
    except Exception as exc:  # noqa: BLE001 - an unreachable database is a finding, not a crash
        return [
            Check(
                "database.round_trip",
                CRIT,
                None,
                "ms",
                f"unreachable: {type(exc).__name__}: {redact(str(exc), secrets)}",
            )
        ]


async def freshness_checks(engine: AsyncEngine, s: Settings, now: datetime) -> list[Check]:
    """Age of the newest row per (venue, dataset) against the dataset's schedule: tickers every
    ``ticker_interval_seconds``, funding rates every ``funding_interval_seconds``, realized
    funding every (shortest funding interval in force on the venue, from ``funding_intervals``,
    8 h while none is known, + the sweep interval). ``WARN`` past
    ``health_stale_warn_factor`` schedules, ``CRIT`` past ``health_stale_crit_factor`` or when a
    venue's collection of the dataset has run and stored no row at all. ``n/a`` when the venue's
    newest ledger row for the dataset says ``unsupported`` (ccxt offers no call for it) or when the
    dataset was never collected for the venue (its configuration leaves it out); ``WARN`` when it
    says ``empty`` (the configuration selects no perpetual)."""
    async with engine.connect() as conn:
        venues = {exchange: None for exchange in (
            await conn.execute(select(instruments.c.exchange).distinct())).scalars()}
        current = funding_intervals.c.valid_to.is_(None)
        shortest = select(funding_intervals.c.exchange, func.min(funding_intervals.c.interval_hours))
        for exchange, hours in await conn.execute(
            shortest.where(current).group_by(funding_intervals.c.exchange)
        ):
            if exchange in venues:
                venues[exchange] = hours
        newest = {}
        for table in (tickers, funding_rates):
            # Per listed instrument, its newest row by primary key (instrument_key, ts): one index
            # probe each, where grouping the whole table by exchange would read every row.
            per_instrument = (
                select(func.max(table.c.ts))
                .where(table.c.instrument_key == instruments.c.instrument_key)
                .scalar_subquery()
            )
            query = select(instruments.c.exchange, func.max(per_instrument)).group_by(
                instruments.c.exchange
            )
            for exchange, ts in await conn.execute(query):
                newest[(exchange, table.name)] = ts
        history = select(funding_history.c.exchange, func.max(funding_history.c.funding_ts))
        for exchange, ts in await conn.execute(history.group_by(funding_history.c.exchange)):
            newest[(exchange, funding_history.name)] = ts
        ledger = await _newest_ledger_status(conn)
    checks = []
    for venue in sorted(venues):
        schedules = {
            "tickers": s.ticker_interval_seconds,
            "funding_rates": s.funding_interval_seconds,
            "funding_history": (venues[venue] or 8.0) * 3600 + s.funding_interval_seconds,
        }
        for dataset, schedule in schedules.items():
            ts = newest.get((venue, dataset))
            name = f"freshness.{venue}.{dataset}"
            status, note = ledger.get((venue, dataset), (None, None))
            if status == "unsupported":
                checks.append(Check(name, NA, None, None, f"not offered by the venue: {note}"))
                continue
            if status == "empty":
                checks.append(Check(name, WARN, None, None, f"nothing selected: {note}"))
                continue
            if ts is None:
                if status is None:
                    checks.append(Check(name, NA, None, None, "not collected for this venue"))
                else:
                    checks.append(Check(name, CRIT, None, "s", "no rows stored"))
                continue
            age = (now - ts).total_seconds()
            status = level(age / schedule, s.health_stale_warn_factor, s.health_stale_crit_factor)
            checks.append(
                Check(
                    name,
                    status,
                    round(age, 1),
                    "s",
                    f"newest row {ts.isoformat()}; schedule {schedule:g} s",
                )
            )
    return checks


async def _newest_ledger_status(conn) -> dict[tuple[str, str], tuple[str, str | None]]:
    """``{(exchange, dataset): (status, error)}`` of each pair's newest collection-ledger row."""
    ledger = collection_ledger.c
    newest = (
        select(ledger.exchange, ledger.dataset, func.max(ledger.started_at).label("started_at"))
        .group_by(ledger.exchange, ledger.dataset)
        .subquery()
    )
    query = select(ledger.exchange, ledger.dataset, ledger.status, ledger.error).join(
        newest,
        (newest.c.exchange == ledger.exchange)
        & (newest.c.dataset == ledger.dataset)
        & (newest.c.started_at == ledger.started_at),
    )
    return {(x, d): (status, error) for x, d, status, error in await conn.execute(query)}


async def ledger_checks(engine: AsyncEngine, s: Settings, now: datetime) -> list[Check]:
    """Per venue over the last hour and day (ledger rows started then): runs, failed steps and
    rows requested/stored/duplicate/quarantined/failed; ``CRIT`` when rows are unaccounted for
    (requested - stored - duplicates - quarantined - failed is not 0 on any step) or the failure
    rate (``failed`` steps / steps) reaches ``health_failure_rate_crit``, ``WARN`` from
    ``health_failure_rate_warn``; ``WARN`` at least when any symbol failed (``partial`` steps).
    Steps the venue cannot serve (``unsupported``) or whose selection is empty do not count as
    failed."""
    ledger = collection_ledger.c
    failed_step = ledger.status == "failed"
    checks = []
    async with engine.connect() as conn:
        for label, span in (("1h", timedelta(hours=1)), ("24h", timedelta(days=1))):
            query = (
                select(
                    ledger.exchange,
                    func.count(distinct(ledger.run_id)),
                    func.count(),
                    func.sum(case((failed_step, 1), else_=0)),
                    func.sum(ledger.requested),
                    func.sum(ledger.stored),
                    func.sum(ledger.duplicates),
                    func.sum(ledger.quarantined),
                    func.sum(ledger.failed),
                    func.sum(
                        ledger.requested
                        - ledger.stored
                        - ledger.duplicates
                        - ledger.quarantined
                        - ledger.failed
                    ),
                )
                .where(ledger.started_at >= now - span)
                .group_by(ledger.exchange)
                .order_by(ledger.exchange)
            )
            for (
                venue,
                runs,
                steps,
                failed,
                requested,
                stored,
                dupes,
                quarantined,
                rows_failed,
                unaccounted,
            ) in await conn.execute(query):
                rate = failed / steps
                status = (
                    CRIT
                    if unaccounted
                    else level(rate, s.health_failure_rate_warn, s.health_failure_rate_crit)
                )
                if status == OK and rows_failed:
                    status = WARN  # some symbols failed in steps that otherwise stored
                checks.append(
                    Check(
                        f"ledger.{venue}.{label}",
                        status,
                        float(unaccounted),
                        "count",
                        f"{runs} runs, {failed}/{steps} steps failed; rows requested {requested}, "
                        f"stored {stored}, duplicate {dupes}, quarantined {quarantined}, "
                        f"failed {rows_failed}, unaccounted {unaccounted}",
                    )
                )
    return checks


def run_history_checks(records: list[RunRecord], s: Settings) -> list[Check]:
    """Per deployment/flow over the given runs: runs, failure rate (Failed or Crashed / finished
    runs), late runs and duration p50/p95 (seconds, finished runs). ``CRIT``/``WARN`` from the
    failure-rate thresholds; ``WARN`` from ``health_late_runs_warn`` late runs."""
    grouped: dict[str, list[RunRecord]] = defaultdict(list)
    for record in records:
        grouped[record.name].append(record)
    checks = []
    for name in sorted(grouped):
        runs = grouped[name]
        durations = [r.duration_s for r in runs if r.duration_s is not None]
        finished = [r for r in runs if r.state_type in FAILED_STATES or r.state_type == "COMPLETED"]
        failed = sum(r.state_type in FAILED_STATES for r in runs)
        late = sum(r.late for r in runs)
        rate = failed / len(finished) if finished else 0.0
        status = level(rate, s.health_failure_rate_warn, s.health_failure_rate_crit)
        if status == OK and late >= s.health_late_runs_warn:
            status = WARN
        p50, p95 = percentile(durations, 50), percentile(durations, 95)
        checks.append(
            Check(
                f"runs.{name}",
                status,
                round(rate, 4),
                "ratio",
                f"{len(runs)} runs, {failed} failed, {late} late; duration p50 "
                f"{_seconds(p50)}, p95 {_seconds(p95)}",
            )
        )
    return checks


@dataclass(frozen=True)
class RunningRun:
    """A flow run in the RUNNING state as the liveness check needs it: ``name`` (deployment,
    else flow), ``run_name``, ``run_id``, ``started`` (UTC), ``last_heartbeat`` (its newest
    ``prefect.flow-run.heartbeat`` event; None: none seen) and ``last_progress`` (its newest
    task-run state change; None: no task run yet)."""

    name: str
    run_name: str
    run_id: str
    started: datetime
    last_heartbeat: datetime | None
    last_progress: datetime | None


def liveness_checks(runs: list[RunningRun], s: Settings, now: datetime) -> list[Check]:
    """One ``liveness`` check over the running flow runs, and one per stalled run:
    ``liveness.<name>.<run_name>`` ``CRIT`` when its newest heartbeat (else its start) is older
    than ``health_heartbeat_stale_seconds`` (its process is probably dead: the automation
    'perpflow: stalled run crashed' sets such runs Crashed), ``WARN`` when no task run changed
    state for ``health_progress_stale_seconds`` (alive but making no progress). Values are ages
    in seconds."""
    checks = []
    for run in runs:
        silent = (now - (run.last_heartbeat or run.started)).total_seconds()
        idle = (now - max(filter(None, (run.last_progress, run.started)))).total_seconds()
        name = f"liveness.{run.name}.{run.run_name}"
        if silent > s.health_heartbeat_stale_seconds:
            checks.append(Check(name, CRIT, round(silent, 1), "s",
                                f"run {run.run_id} RUNNING without a heartbeat for "
                                f"{_seconds(silent)} (last: {_iso(run.last_heartbeat)})"))
        elif idle > s.health_progress_stale_seconds:
            checks.append(Check(name, WARN, round(idle, 1), "s",
                                f"run {run.run_id} RUNNING, heartbeating, but no task run "
                                f"changed state for {_seconds(idle)}"))
    summary = (f"{len(runs)} running flow run(s), {len(checks)} stalled"
               if runs else "no running flow run")
    return [Check("liveness", worst(checks) if checks else OK, len(checks), "count", summary),
            *checks]


def _iso(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else "never"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def render_markdown(
    status: str, previous: str | None, checks: list[Check], taken_at: datetime
) -> str:
    """The health report as markdown: the overall status and every non-OK check first, then all
    checks grouped by their first name part (system, database, freshness, ledger, runs)."""
    lines = [
        f"# Health: {status}",
        "",
        f"Taken {taken_at.isoformat()}; previous: {previous or 'none'}.",
        "",
    ]
    attention = sorted((c for c in checks if c.status != OK), key=lambda c: -RANK[c.status])
    lines += ["## Attention", ""]
    lines += [f"- **{c.status}** `{c.name}`: {_value(c)} {c.detail}" for c in attention] or [
        "- none"
    ]
    sections: dict[str, list[Check]] = defaultdict(list)
    for check in checks:
        sections[check.name.split(".")[0]].append(check)
    for section, items in sections.items():
        lines += [
            "",
            f"## {section}",
            "",
            "| status | check | value | detail |",
            "|---|---|---|---|",
        ]
        lines += [f"| {c.status} | `{c.name}` | {_value(c)} | {c.detail} |" for c in items]
    return "\n".join(lines) + "\n"


def _value(check: Check) -> str:
    if check.value is None:
        return "n/a"
    if check.unit == "bytes":
        return f"{check.value / 2**20:.1f} MiB"
    return f"{check.value:g} {check.unit or ''}".strip()


def snapshot_rows(status: str, checks: list[Check], taken_at: datetime) -> list[dict[str, Any]]:
    """``health_snapshots`` rows (without ``run_id``): one per check plus ``overall``."""
    rows = [
        {
            "name": c.name,
            "status": c.status,
            "value": c.value,
            "unit": c.unit,
            "detail": c.detail,
            "taken_at": taken_at,
        }
        for c in checks
    ]
    return rows + [
        {
            "name": OVERALL,
            "status": status,
            "value": None,
            "unit": None,
            "detail": "",
            "taken_at": taken_at,
        }
    ]


async def certificate_checks(url: str, now: datetime, days: int = 7) -> list[Check]:
    """The completeness certificates (``completeness`` table) of the last ``days`` UTC days
    before ``now``: ``CRIT`` per (venue, dataset) with unexplained observations on any of
    them (value: how many, detail: the days and the expected/stored/explained counts), else one
    ``completeness`` check ``OK`` (value: rows certified); ``n/a`` when no day was certified
    yet. ``url`` is the market database's URL (the run's shared engine is used)."""
    # Kept in one block: the certificate is its own concern (perpflow.completeness).
    from perpflow.store.engine import run_engine
    from perpflow.store.schema import completeness

    c = completeness.c
    first = (now - timedelta(days=days)).date()
    query = select(c.exchange, c.dataset, c.day, c.expected, c.stored, c.explained,
                   c.unexplained).where(c.day >= first).order_by(c.exchange, c.dataset, c.day)
    async with run_engine(url) as engine, engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    if not rows:
        return [Check("completeness", NA, None, "count", f"no day certified since {first}")]
    lost: dict[tuple[str, str], list] = defaultdict(list)
    for row in rows:
        if row.unexplained:
            lost[(row.exchange, row.dataset)].append(row)
    checks = [
        Check(
            f"completeness.{venue}.{dataset}",
            CRIT,
            float(sum(r.unexplained for r in bad)),
            "count",
            "unexplained observations on "
            + ", ".join(
                f"{r.day}: {r.unexplained} of {r.expected} (stored {r.stored}, explained "
                f"{r.explained})" for r in bad
            ),
        )
        for (venue, dataset), bad in sorted(lost.items())
    ]
    days_seen = len({row.day for row in rows})
    return checks or [
        Check("completeness", OK, float(len(rows)), "count",
              f"{len(rows)} (venue, dataset, day) rows over {days_seen} day(s) since {first}, "
              "every missing observation explained")
    ]
