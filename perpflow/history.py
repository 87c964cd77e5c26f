"""Realized funding history: paging ccxt ``fetch_funding_rate_history`` until the returned
timestamps prove which part of a time range is covered.

Kept apart from the client boundary (``perpflow.exchanges``) because paging is where a venue's
quirks decide whether settlements are lost. Venues differ in ways a page's size or order never
reveals: some cap pages below the asked limit, some return the newest rows of the range (okx,
bybit: anchored at the upper bound) or the newest N whatever ``since`` says, some return
newest-first, some ignore the upper bound. So nothing here is inferred from a page's size or
order; only timestamps count, under one assumption: a page is a contiguous run of the venue's
settlements (no holes inside one answer).

Why not ccxt's own pagination (``params={'paginate': True}``): for binance and okx it is
``fetch_paginated_call_deterministic`` with a fixed ``'8h'`` timeframe, i.e. windows of
limit x 8 h, which lose settlements of 1 h / 4 h instruments once a window holds more than a page
(and of capped pages); for bybit it is ``fetch_paginated_call_dynamic``, which stops after 10
calls by default, swallows errors up to ``maxRetries`` and reports no coverage. Neither proves
what it covered, which is the point here.

How coverage is proven (``_Pager.cover``), for a stretch ``[a, b]`` (UTC ms):

- The request asks from an *anchor* when one is known (a settlement already held just before
  ``a``, e.g. the newest row of the previous page): a venue that honours ``since`` must return
  it, and then the stretch from the anchor to the page's first new row is proven empty.
- An empty answer (nothing at or after the cursor up to ``b``) proves ``[a, b]``.
- Rows beyond ``b`` (upper bound ignored) are not kept unless inside the whole request, but they
  prove the stretch up to ``b`` when the page also starts inside it or at the anchor.
- A page whose first new row lies after ``a`` without the anchor in it leaves ``[a, first)``
  unproven: it is asked for on its own (``until = first - 1``), which pages backwards through
  venues anchored at the upper bound and proves the stretch empty on the others.
- An answer holding only rows newer than the stretch (and not the anchor) means the venue ignored
  ``since`` (it serves the newest N only) or serves nothing that old: the stretch is reported
  ``beyond_venue_horizon``, never counted as covered.
- The cursor then moves past the page's newest row, anchored at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from perpflow import normalize
from perpflow.backfill import HistoryRequest
from perpflow.exchanges import ExchangeError, call, capability, exchange_client, with_markets
from perpflow.intervals import (
    IntervalSpan,
    Observation,
    apply_observations,
    hours_at,
    infer_intervals,
)
from perpflow.normalize import Batch
from perpflow.settings import ExchangeConfig

BEYOND_VENUE_HORIZON = "beyond_venue_horizon"
VENUE_UNSUPPORTED = "venue_unsupported"
FETCH_FAILED = "fetch_failed"
PERMANENT_REASONS = frozenset({BEYOND_VENUE_HORIZON, VENUE_UNSUPPORTED})

NEWEST_FIRST, SINCE_IGNORED, UNTIL_IGNORED, PAGE_CAPPED = (
    "newest_first",
    "since_ignored",
    "until_ignored",
    "page_capped",
)


@dataclass(frozen=True)
class Uncovered:
    """A stretch ``[start, end]`` (UTC ms, inclusive) of a request not proven covered, with its
    ``reason`` (``beyond_venue_horizon``, ``venue_unsupported``, ``fetch_failed``) and a
    human-readable ``detail``."""

    start: int
    end: int
    reason: str
    detail: str


@dataclass(frozen=True)
class Coverage:
    """What one symbol's fetch of ``[requested_from, requested_to]`` (UTC ms) proved.

    ``covered``: disjoint, ascending inclusive ranges in which every settlement the venue serves
    was returned; ``uncovered``: the rest of the request, with reasons; ``quirks``: venue
    behaviours seen in the timestamps (``newest_first``, ``since_ignored``, ``until_ignored``,
    ``page_capped``). ``covered_from``/``covered_to`` are the newest contiguous covered range
    (None when nothing was proven).
    """

    requested_from: int
    requested_to: int
    covered: tuple[tuple[int, int], ...]
    uncovered: tuple[Uncovered, ...]
    quirks: frozenset[str] = frozenset()

    @property
    def covered_from(self) -> int | None:
        return self.covered[-1][0] if self.covered else None

    @property
    def covered_to(self) -> int | None:
        return self.covered[-1][1] if self.covered else None

    @property
    def complete(self) -> bool:
        """True when the whole request is covered."""
        return self.covered == ((self.requested_from, self.requested_to),)


@dataclass(frozen=True)
class FundingHistory:
    """One symbol's realized funding in a requested range: ccxt funding-rate-history dicts
    (``fundingRate`` a fraction per interval, ``timestamp`` the settlement time in UTC ms),
    sorted by time, one per settlement time, rows without a usable time last (for quarantine);
    its ``coverage``; ``error`` (``'ErrorClass: message'``) when a request failed, ``transient``
    when that failure may pass on a retry (ccxt's NetworkError family)."""

    symbol: str
    rows: list[dict[str, Any]]
    coverage: Coverage
    error: str | None = None
    transient: bool = False


def _merge(ranges: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return tuple(merged)


def _holes(start: int, end: int, taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``[start, end]`` outside every range of ``taken``."""
    holes, cursor = [], start
    for lo, hi in _merge(taken):
        if lo > cursor:
            holes.append((cursor, min(lo - 1, end)))
        cursor = max(cursor, hi + 1)
    if cursor <= end:
        holes.append((cursor, end))
    return [(lo, hi) for lo, hi in holes if lo <= hi]


@dataclass
class _Pager:
    """The paging state of one symbol's fetch (see the module docstring)."""

    client: Any
    label: str
    symbol: str
    since_ms: int
    until_ms: int
    limit: int
    until_param: str = "until"
    until_exclusive: bool = False
    rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    untimed: list[dict[str, Any]] = field(default_factory=list)
    proven: list[tuple[int, int]] = field(default_factory=list)
    unreachable: list[Uncovered] = field(default_factory=list)
    quirks: set[str] = field(default_factory=set)
    largest_page: int = 0
    pages_with_rows: int = 0

    async def _page(self, since: int, until: int) -> list[int]:
        """One request; keeps the rows inside the whole request and returns the distinct
        settlement times of the answer, ascending."""
        bound = until + 1 if self.until_exclusive else until
        page = await call(
            self.label,
            "fetch_funding_rate_history",
            self.client.fetch_funding_rate_history,
            self.symbol,
            since,
            self.limit,
            {self.until_param: bound},
        )
        stamps = []
        for row in page:
            stamp = row.get("timestamp")
            if not isinstance(stamp, int) or isinstance(stamp, bool):
                if row not in self.untimed:
                    self.untimed.append(row)
                continue
            stamps.append(stamp)
            if self.since_ms <= stamp <= self.until_ms:
                self.rows.setdefault(stamp, row)
        if len(stamps) >= 2 and stamps[0] > stamps[-1]:
            self.quirks.add(NEWEST_FIRST)
        if page:
            self.largest_page = max(self.largest_page, len(page))
            self.pages_with_rows += 1
        if any(t < since for t in stamps):
            self.quirks.add(SINCE_IGNORED)
        if any(t > until for t in stamps):
            self.quirks.add(UNTIL_IGNORED)
        return sorted(set(stamps))

    async def cover(self, a: int, b: int, anchor: int | None) -> None:
        """Prove ``[a, b]`` covered (or unreachable), asking from ``anchor`` when known."""
        while a <= b:
            stamps = await self._page(anchor if anchor is not None else a, b)
            mine = [t for t in stamps if a <= t <= b]
            beyond = any(t > b for t in stamps)
            anchored = anchor is not None and anchor in stamps
            if not mine:
                if beyond and not anchored:
                    self.quirks.add(SINCE_IGNORED)
                    self.unreachable.append(
                        Uncovered(
                            a,
                            b,
                            BEYOND_VENUE_HORIZON,
                            "the venue answered with newer settlements only: it ignores since "
                            "or serves nothing this old",
                        )
                    )
                else:
                    self.proven.append((a, b))
                return
            first, last = mine[0], mine[-1]
            if first > a and not anchored:
                await self.cover(a, first - 1, anchor)
                self.proven.append((first, last))
            else:
                self.proven.append((a, last))
            if beyond:
                self.proven.append((last, b))
                return
            anchor, a = last, last + 1

    def result(self, error: str | None, transient: bool = False) -> FundingHistory:
        covered = _merge(self.proven)
        uncovered = list(self.unreachable)
        taken = list(covered) + [(u.start, u.end) for u in uncovered]
        for lo, hi in _holes(self.since_ms, self.until_ms, taken):
            uncovered.append(Uncovered(lo, hi, FETCH_FAILED, error or "not fetched"))
        if self.pages_with_rows > 1 and self.largest_page < self.limit:
            self.quirks.add(PAGE_CAPPED)
        coverage = Coverage(
            self.since_ms,
            self.until_ms,
            covered,
            tuple(sorted(uncovered, key=lambda u: u.start)),
            frozenset(self.quirks),
        )
        rows = [self.rows[t] for t in sorted(self.rows)] + self.untimed
        return FundingHistory(self.symbol, rows, coverage, error, transient)


def failed_history(symbol: str, since_ms: int, until_ms: int, exc: BaseException) -> FundingHistory:
    """The result of a fetch of ``[since_ms, until_ms]`` that failed before proving anything:
    no rows, the whole range ``fetch_failed`` with ``'ErrorClass: message'``."""
    cause = exc.__cause__ if isinstance(exc, ExchangeError) and exc.__cause__ else exc
    error = f"{type(cause).__name__}: {str(cause)[:500]}"
    gone = Uncovered(since_ms, until_ms, FETCH_FAILED, error)
    coverage = Coverage(since_ms, until_ms, (), (gone,))
    return FundingHistory(symbol, [], coverage, error, bool(getattr(exc, "transient", False)))


async def page_funding_history(
    client: Any,
    label: str,
    symbol: str,
    since_ms: int,
    until_ms: int,
    *,
    limit: int,
    until_param: str = "until",
    until_exclusive: bool = False,
    anchor_ms: int | None = None,
) -> FundingHistory:
    """Every realized settlement of ``symbol`` in ``[since_ms, until_ms]`` (UTC ms) that a ccxt
    client (``fetch_funding_rate_history``) serves, with the coverage its timestamps prove.

    ``limit`` is the page size asked for; the upper bound goes in ``params[until_param]``
    (``until_ms + 1`` when ``until_exclusive``, e.g. okx's ``after``); ``anchor_ms`` is a
    settlement already held before ``since_ms`` (the newest stored one), asked from so that a
    venue honouring ``since`` proves the stretch after it. Never raises for a venue error: a
    failed request ends the paging, the rows so far are returned, and the rest of the range is
    ``fetch_failed`` with ``error`` set. A venue without ``fetchFundingRateHistory`` (ccxt
    ``has``) is ``venue_unsupported`` without a request.
    """
    pager = _Pager(client, label, symbol, since_ms, until_ms, limit, until_param, until_exclusive)
    if not client.has.get("fetchFundingRateHistory"):
        detail = "ccxt has no fetchFundingRateHistory for this venue"
        pager.unreachable.append(Uncovered(since_ms, until_ms, VENUE_UNSUPPORTED, detail))
        return pager.result(None)
    if anchor_ms is not None and anchor_ms >= since_ms:
        raise ValueError(f"anchor_ms: must be before since_ms, got {anchor_ms} >= {since_ms}")
    try:
        await pager.cover(since_ms, until_ms, anchor_ms)
    except ExchangeError as exc:
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        return pager.result(f"{type(cause).__name__}: {str(cause)[:500]}", exc.transient)
    return pager.result(None)


async def fetch_funding_history(
    venue: ExchangeConfig,
    markets: dict[str, dict[str, Any]],
    symbol: str,
    since_ms: int,
    until_ms: int,
    anchor_ms: int | None = None,
) -> FundingHistory:
    """``page_funding_history`` through the run's ccxt client of ``venue`` (so every page awaits
    the ``before_each_request`` hook), with the venue capability's page limit and upper-bound
    parameter. ``markets`` is the loaded ``{symbol: ccxt market}`` (no reload)."""
    cap = capability(venue.id)
    async with exchange_client(venue) as client:
        with_markets(client, markets)
        return await page_funding_history(
            client,
            venue.label,
            symbol,
            since_ms,
            until_ms,
            limit=cap.history_page_limit,
            until_param=cap.history_until_param,
            until_exclusive=cap.history_until_exclusive,
            anchor_ms=anchor_ms,
        )


def extend_coverage(stored: tuple[int, int] | None, coverage: Coverage) -> tuple[int, int] | None:
    """The instrument's contiguous coverage ``(covered_from, covered_to)`` (UTC ms) after a fetch
    proved ``coverage``, given what was ``stored`` before (None: never covered).

    A covered range touching or overlapping the stored one joins it. A newer range separated
    from it replaces it only when everything between was requested and is unreachable for good
    (``beyond_venue_horizon``, ``venue_unsupported``): such a hole never fills, while one left by
    a failed fetch must be fetched again, so the stored ``covered_to`` stays and the next sweep
    starts from there. Older separate ranges (gap refetches) leave the stored range as it is.
    """
    current = stored
    for lo, hi in coverage.covered:
        if current is None:
            current = (lo, hi)
        elif lo <= current[1] + 1 and hi >= current[0] - 1:
            current = (min(lo, current[0]), max(hi, current[1]))
        elif lo > current[1] + 1 and coverage.requested_from <= current[1] + 1:
            hole = (max(current[1] + 1, coverage.requested_from), lo - 1)
            blocking = [
                u for u in coverage.uncovered if u.start <= hole[1] and u.end >= hole[0]
            ]
            if all(u.reason in PERMANENT_REASONS for u in blocking):
                current = (lo, hi)
    return current


def history_batch(
    exchange: str,
    plan: list[HistoryRequest],
    results: list[FundingHistory],
    timelines: dict[str, list[IntervalSpan]],
    received_ms: int,
    run_id: str | None,
    max_abs_rate: float,
) -> tuple[Batch, dict[str, list[Observation]], dict[str, list[Coverage]]]:
    """Normalize one venue's fetched history (``results``, one per request of ``plan``).

    Returns ``(batch, inferred, coverage)``: the ``funding_history`` batch (rows per
    ``normalize.funding_history_rows``, each with ``interval_hours`` = the interval in force at its
    settlement after inference, None when unknown; failed symbols in ``batch.failed`` as
    ``'ErrorClass: message'``), the intervals inferred from the settlement times (with each
    request's anchor, so a change at the boundary is seen), ``{symbol: [Observation]}``, against
    ``timelines`` (``{symbol: [IntervalSpan]}`` known before), and ``{symbol: [Coverage]}``.
    """
    batch = Batch(exchange, "funding_history")
    timelines = dict(timelines)
    inferred: dict[str, list[Observation]] = {}
    coverage: dict[str, list[Coverage]] = {}
    for request, result in zip(plan, results, strict=True):
        symbol = request.symbol
        coverage.setdefault(symbol, []).append(result.coverage)
        if result.error:
            batch.failed[symbol] = result.error
        stamps = sorted(
            {row["timestamp"] for row in result.rows if isinstance(row.get("timestamp"), int)}
            | ({request.anchor_ms} if request.anchor_ms is not None else set())
        )
        known = timelines.get(symbol, [])
        found = infer_intervals(stamps, known)
        inferred.setdefault(symbol, []).extend(found)
        timeline, _ = apply_observations(known, found)
        timelines[symbol] = timeline
        first = len(batch.rows)
        normalize.funding_history_rows(
            exchange, symbol, result.rows, None, received_ms, run_id, max_abs_rate, batch
        )
        for row in batch.rows[first:]:
            row["interval_hours"] = hours_at(timeline, int(row["funding_ts"].timestamp() * 1000))
    return batch, inferred, coverage
