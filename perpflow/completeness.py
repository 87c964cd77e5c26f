"""The daily completeness certificate: per (venue, dataset, UTC day) what was expected, what was
stored, what is explained (and why) and what is not.

Sources, all read with SQL from the market database (SQLite or PostgreSQL):

* expected snapshots (``tickers``, ``funding_rates``): one per schedule interval of the
  collector (``ticker_interval_seconds`` / ``funding_interval_seconds``) per instrument
  selected that day. An instrument is selected from its ``instruments.first_seen`` on; it stops
  being selected at its ``last_seen`` only when the venue's newest listing (the venue's greatest
  ``last_seen``) no longer has it. An instrument of the newest listing stays expected to the end
  of the day even when nothing ran, so a venue or flow that stopped cannot hide its outage.
* expected realized funding (``funding_history``): every settlement of the day by the interval
  in force (``funding_intervals``; settlements at whole multiples of the interval since the
  epoch, as the venues settle), for each instrument still selected at that settlement. An
  instrument whose interval was never learnt cannot be certified: it is named in ``detail``.
* stored: snapshots are counted as distinct collection runs (``run_id``) per instrument with a
  row collected that day (a run may store several observations of one instrument), at most the
  instrument's expected count; settlements as stored ``funding_history`` rows of the day, at
  most the expected count per instrument.
* explained, in this order, each reason taking at most what is still missing:
  ``collection_ledger`` rows of the day with status ``unsupported`` (the whole day),
  ``circuit_open`` (venue down), ``failed``, ``empty`` (each run: what it meant to fetch, or
  the instruments selected), ``partial`` (the failed symbols), unchanged observations already
  stored (``duplicates``) and ``quarantined`` rows; for realized funding, ``funding_gaps``
  ``unfillable`` windows by their reason (``beyond_venue_horizon``, ``venue_unsupported``,
  ...), failed symbols of ``partial`` steps, then venue-wide ``unsupported``, ``circuit_open``
  and ``failed`` steps.
* unexplained = expected - stored - explained; a certificate row with unexplained > 0 is a
  loss nobody can account for (report-health is CRIT on it).

No maintenance-window record exists yet; when one does, it is one more reason here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import distinct, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from perpflow.intervals import HOUR_MS, IntervalSpan
from perpflow.settings import Settings
from perpflow.store.history import timelines_on
from perpflow.store.schema import (
    collection_ledger,
    funding_gaps,
    funding_history,
    funding_rates,
    instruments,
    tickers,
)

SNAPSHOTS = {"tickers": tickers, "funding_rates": funding_rates}
HISTORY = "funding_history"
DATASETS = (*SNAPSHOTS, HISTORY)
VENUE_DOWN = "venue down (circuit open)"
UNCHANGED = "unchanged (identical observation already stored)"
QUARANTINED = "quarantined (malformed values)"
EMPTY = "empty selection"
MAX_NAMED = 20  # symbols named per reason in ``detail``

Pair = tuple[str, str]  # (exchange, dataset)


def cadence(settings: Settings) -> dict[str, int]:
    """The collector's schedule interval (seconds) per snapshot dataset, from the settings."""
    return {
        "tickers": settings.ticker_interval_seconds,
        "funding_rates": settings.funding_interval_seconds,
    }


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """``[day 00:00 UTC, next day 00:00 UTC)`` as aware datetimes."""
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


def _ms(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def settlements_between(lo_ms: int, hi_ms: int, hours: float) -> int:
    """Settlements at whole multiples of ``hours`` (since the epoch) in ``[lo_ms, hi_ms)``."""
    step = int(hours * HOUR_MS)
    if step <= 0 or hi_ms <= lo_ms:
        return 0
    return (hi_ms - 1) // step - (lo_ms - 1) // step


@dataclass
class Tally:
    """One certificate row being built: counts and explanations of a (venue, dataset, day)."""

    exchange: str
    dataset: str
    instruments: int = 0
    expected: int = 0
    stored: int = 0
    reasons: Counter = field(default_factory=Counter)
    notes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    @property
    def missing(self) -> int:
        """Expected observations neither stored nor explained yet."""
        return self.expected - self.stored - sum(self.reasons.values())

    def explain(self, reason: str, amount: int, note: str | None = None) -> int:
        """Attribute up to ``amount`` missing observations to ``reason``; returns how many."""
        taken = max(0, min(amount, self.missing))
        if taken:
            self.reasons[reason] += taken
        if note and note not in self.notes[reason] and (taken or reason in self.reasons):
            self.notes[reason].append(note)
        return taken

    def row(self, day: date, certified_at: datetime, run_id: str | None) -> dict[str, Any]:
        """The ``completeness`` row (counts in observations; ``reasons``: {reason: count})."""
        explained = sum(self.reasons.values())
        detail = "; ".join(
            f"{reason}: {', '.join(notes[:MAX_NAMED])}"
            + (f" (+{len(notes) - MAX_NAMED} more)" if len(notes) > MAX_NAMED else "")
            for reason, notes in sorted(self.notes.items())
            if notes
        )
        return {
            "exchange": self.exchange,
            "dataset": self.dataset,
            "day": day,
            "instruments": self.instruments,
            "expected": self.expected,
            "stored": self.stored,
            "explained": explained,
            "unexplained": self.expected - self.stored - explained,
            "reasons": dict(self.reasons) or None,
            "detail": detail or None,
            "certified_at": certified_at,
            "run_id": run_id,
        }


@dataclass(frozen=True)
class Listing:
    """An instrument's selection: ``first_seen``, ``last_seen`` and whether the venue's newest
    listing still has it (``current``: then it is selected to the end of any later day)."""

    symbol: str
    first_seen: datetime
    last_seen: datetime
    current: bool



async def _listings(conn: AsyncConnection, end: datetime) -> dict[str, list[Listing]]:
    """``{exchange: [Listing]}`` of the instruments first seen before ``end``."""
    i = instruments.c
    newest = dict(
        (await conn.execute(select(i.exchange, func.max(i.last_seen)).group_by(i.exchange))).all()
    )
    rows = await conn.execute(
        select(i.exchange, i.symbol, i.first_seen, i.last_seen).where(i.first_seen < end)
    )
    found: dict[str, list[Listing]] = defaultdict(list)
    for exchange, symbol, first_seen, last_seen in rows:
        found[exchange].append(
            Listing(symbol, first_seen, last_seen, last_seen >= newest[exchange])
        )
    return found


async def _ledger(conn: AsyncConnection, start: datetime, end: datetime) -> dict[Pair, list]:
    """``{(exchange, dataset): [ledger rows]}`` of the steps started in ``[start, end)``."""
    c = collection_ledger.c
    query = select(
        c.exchange, c.dataset, c.status, c.requested, c.duplicates, c.quarantined, c.failed,
        c.failed_symbols, c.error,
    ).where(c.started_at >= start, c.started_at < end).order_by(c.started_at)
    found: dict[Pair, list] = defaultdict(list)
    for row in await conn.execute(query):
        found[(row.exchange, row.dataset)].append(row)
    return found


async def _per_symbol(conn: AsyncConnection, query) -> dict[Pair, int]:
    return {(x, s): n for x, s, n in await conn.execute(query)}


async def _snapshot_runs(
    conn: AsyncConnection, dataset: str, start: datetime, end: datetime
) -> dict[Pair, int]:
    """``{(exchange, symbol): distinct runs with a row of ``dataset`` collected in the day}``."""
    t = SNAPSHOTS[dataset].c
    return await _per_symbol(
        conn,
        select(t.exchange, t.symbol, func.count(distinct(t.run_id)))
        .where(t.collected_at >= start, t.collected_at < end)
        .group_by(t.exchange, t.symbol),
    )


async def _settlements_stored(conn: AsyncConnection, start: datetime, end: datetime):
    h = funding_history.c
    return await _per_symbol(
        conn,
        select(h.exchange, h.symbol, func.count())
        .where(h.funding_ts >= start, h.funding_ts < end)
        .group_by(h.exchange, h.symbol),
    )


async def _unfillable(conn: AsyncConnection, start: datetime, end: datetime):
    g = funding_gaps.c
    query = select(g.exchange, g.symbol, g.gap_from, g.gap_to, g.interval_hours, g.detail).where(
        g.status == "unfillable", g.gap_from < end, g.gap_to >= start
    )
    found: dict[Pair, list] = defaultdict(list)
    for row in await conn.execute(query):
        found[(row.exchange, row.symbol)].append(row)
    return found


def _slots(listing: Listing, start: datetime, end: datetime, seconds: int) -> int:
    """Schedule intervals of ``seconds`` in ``[start, end)`` during which ``listing`` was
    selected (from the interval of its first sighting to that of its last, or to ``end``)."""
    first = max(start, listing.first_seen)
    last = end - timedelta(microseconds=1)
    if not listing.current:
        last = min(last, listing.last_seen)
    if last < first:
        return 0
    step = timedelta(seconds=seconds)
    return (last - start) // step - (first - start) // step + 1


def _error_class(error: str | None) -> str:
    return (error or "unknown").split(":", 1)[0].strip() or "unknown"


def _explain_steps(tally: Tally, steps: list, selected: int, *, whole: bool) -> None:
    """Explain ``tally``'s shortfall by its ledger ``steps``; ``whole``: a venue-wide step
    explains all that is missing (realized funding), else what the run meant to fetch."""
    for step in steps:
        if step.status == "unsupported":
            tally.explain("unsupported", tally.missing, step.error)
    for step in steps:
        meant = tally.missing if whole else (step.requested or selected)
        if step.status == "circuit_open":
            tally.explain(VENUE_DOWN, meant, step.error)
        elif step.status == "failed":
            tally.explain(f"failed: {_error_class(step.error)}", meant, step.error)
        elif step.status == "empty" and not whole:
            tally.explain(EMPTY, meant, step.error)
    if whole:
        return
    for step in steps:
        for symbol, error in (step.failed_symbols or {}).items():
            tally.explain(f"failed symbol: {_error_class(error)}", 1, symbol)
    tally.explain(UNCHANGED, sum(s.duplicates for s in steps if s.status in ("ok", "partial")))
    tally.explain(QUARANTINED, sum(s.quarantined for s in steps))


def _snapshot_tally(
    exchange: str, dataset: str, listings: list[Listing], runs: dict[Pair, int],
    steps: list, window: tuple[datetime, datetime], seconds: int,
) -> Tally:
    start, end = window
    tally = Tally(exchange, dataset)
    for listing in listings:
        slots = _slots(listing, start, end, seconds)
        if slots <= 0:
            continue
        tally.instruments += 1
        tally.expected += slots
        tally.stored += min(slots, runs.get((exchange, listing.symbol), 0))
    _explain_steps(tally, steps, tally.instruments, whole=False)
    return tally


def _history_tally(
    exchange: str, listings: list[Listing], stored: dict[Pair, int],
    timelines: dict[Pair, list[IntervalSpan]], gaps: dict[Pair, list], steps: list,
    window: tuple[datetime, datetime],
) -> Tally:
    start, end = window
    lo, hi = _ms(start), _ms(end)
    tally = Tally(exchange, HISTORY)
    failed_symbols = {
        symbol: error for step in steps if step.status == "partial"
        for symbol, error in (step.failed_symbols or {}).items()
    }
    for listing in listings:
        key = (exchange, listing.symbol)
        until = hi if listing.current else min(hi, _ms(listing.last_seen) + 1)
        if until <= lo:
            continue
        timeline = timelines.get(key)
        if not timeline:
            tally.notes["interval unknown (not certifiable)"].append(listing.symbol)
            continue
        expected = sum(
            settlements_between(max(lo, s.valid_from), min(until, s.valid_to or until), s.hours)
            for s in timeline
        )
        if not expected:
            continue
        tally.instruments += 1
        tally.expected += expected
        have = min(expected, stored.get(key, 0))
        tally.stored += have
        short = expected - have
        for gap in gaps.get(key, ()):
            reason_word = (gap.detail or "").split(":", 1)[0]
            reason = reason_word if reason_word and " " not in reason_word else "not served"
            in_day = settlements_between(
                max(lo, _ms(gap.gap_from)), min(hi, _ms(gap.gap_to) + 1), gap.interval_hours
            ) or short
            short -= tally.explain(
                f"unfillable: {reason}", min(short, in_day),
                f"{listing.symbol} {gap.gap_from:%Y-%m-%d %H:%M}..{gap.gap_to:%H:%M}",
            )
        if listing.symbol in failed_symbols and short:
            error = failed_symbols[listing.symbol]
            tally.explain(f"failed symbol: {_error_class(error)}", short, listing.symbol)
    _explain_steps(tally, steps, tally.instruments, whole=True)
    return tally


async def compute_certificate(
    engine: AsyncEngine,
    day: date,
    intervals: dict[str, int],
    wanted: dict[str, Iterable[str]] | None = None,
    *,
    now: datetime | None = None,
    run_id: str | None = None,
) -> list[dict[str, Any]]:
    """The certificate rows of UTC ``day`` (``completeness`` columns; counts are observations:
    snapshots or settlements), one per (venue, dataset), ordered by venue and dataset.

    ``intervals``: schedule interval in seconds per snapshot dataset (``cadence(settings)``).
    ``wanted``: ``{venue label: datasets collected there}`` (the configuration); every pair of
    it is certified, and so is every other pair with instruments listed, rows stored or ledger
    steps that day; None: every dataset of every venue with instruments. A day not over yet is
    certified up to ``now`` (default: the current time). Reads only; raises SQLAlchemy's errors.
    """
    now = now or datetime.now(UTC)
    start, end = day_bounds(day)
    end = min(end, now)
    async with engine.connect() as conn:
        listings = await _listings(conn, end)
        ledger = await _ledger(conn, start, end)
        runs = {name: await _snapshot_runs(conn, name, start, end) for name in SNAPSHOTS}
        settled = await _settlements_stored(conn, start, end)
        gaps = await _unfillable(conn, start, end)
        timelines = await timelines_on(conn, None, None)
    pairs: set[Pair] = {(venue, name) for venue, sets in (wanted or {}).items() for name in sets}
    if wanted is None:
        pairs |= {(venue, dataset) for venue in listings for dataset in DATASETS}
    pairs |= set(ledger) | {(x, name) for name, got in runs.items() for x, _ in got}
    pairs |= {(x, HISTORY) for x, _ in settled}
    rows = []
    for exchange, dataset in sorted(p for p in pairs if p[1] in DATASETS):
        venue = listings.get(exchange, [])
        steps = ledger.get((exchange, dataset), [])
        if dataset == HISTORY:
            tally = _history_tally(exchange, venue, settled, timelines, gaps, steps, (start, end))
        else:
            tally = _snapshot_tally(exchange, dataset, venue, runs[dataset], steps,
                                    (start, end), intervals[dataset])
        if not venue:
            tally.notes["no instrument listed"].append("markets never loaded")
        rows.append(tally.row(day, now, run_id))
    return rows
