"""Paging of realized funding history against a fake ccxt-like client that simulates the venues'
quirks: every settlement in the range is returned, or its absence is reported with a reason, and
the coverage is exactly what the timestamps prove."""

from __future__ import annotations

from dataclasses import dataclass, field

import ccxt
import pytest

from perpflow.history import (
    BEYOND_VENUE_HORIZON,
    FETCH_FAILED,
    NEWEST_FIRST,
    PAGE_CAPPED,
    SINCE_IGNORED,
    UNTIL_IGNORED,
    VENUE_UNSUPPORTED,
    Coverage,
    extend_coverage,
    page_funding_history,
)

HOUR = 3_600_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % (8 * HOUR)  # a settlement time
SYMBOL = "BTC/USDT:USDT"


@dataclass
class FakeVenue:
    """A ccxt-like client over ``stamps`` (settlement times, UTC ms).

    ``anchor``: 'since' (oldest rows from since, like binance) or 'until' (newest rows up to the
    upper bound, like okx/bybit); ``cap``: rows per page at most, whatever the limit;
    ``newest_first``; ``ignore_since`` (answers the newest rows, since or not); ``ignore_until``;
    ``fail_after``: requests answered before every further one raises ``error``. No client-side
    filtering: the worst case ccxt could pass on."""

    stamps: list[int]
    anchor: str = "since"
    cap: int | None = None
    newest_first: bool = False
    ignore_since: bool = False
    ignore_until: bool = False
    fail_after: int | None = None
    error: Exception = field(default_factory=lambda: ccxt.ExchangeNotAvailable("503 down"))
    supported: bool = True
    requests: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def has(self):
        return {"fetchFundingRateHistory": self.supported}

    async def fetch_funding_rate_history(self, symbol, since, limit, params):
        if self.fail_after is not None and len(self.requests) >= self.fail_after:
            raise self.error
        until = params["until"]
        self.requests.append((since, until, limit))
        size = min(limit, self.cap or limit)
        rows = [t for t in self.stamps if (self.ignore_since or t >= since)]
        rows = [t for t in rows if self.ignore_until or t <= until]
        if self.anchor == "until" or self.ignore_since:
            page = rows[-size:]
        else:
            page = rows[:size]
        if self.newest_first:
            page = page[::-1]
        return [{"symbol": symbol, "timestamp": t, "fundingRate": (t % 7) * 1e-5} for t in page]


def hourly(count: int, start: int = T0, hours: int = 1) -> list[int]:
    return [start + k * hours * HOUR for k in range(count)]


async def fetch(venue: FakeVenue, since: int, until: int, limit: int = 100, anchor=None):
    return await page_funding_history(
        venue, "fake", SYMBOL, since, until, limit=limit, anchor_ms=anchor
    )


def assert_exact(result, stamps: list[int], since: int, until: int) -> None:
    """Covered and uncovered parts tile [since, until]; every settlement in a covered part is
    returned once and in order; every one not returned lies in an uncovered part."""
    cov = result.coverage
    parts = sorted([*cov.covered, *((u.start, u.end) for u in cov.uncovered)])
    assert parts[0][0] == since and parts[-1][1] == until
    assert all(a[1] + 1 == b[0] for a, b in zip(parts, parts[1:])), parts
    got = [row["timestamp"] for row in result.rows]
    assert got == sorted(set(got))
    inside = [t for t in stamps if since <= t <= until]
    covered = [t for t in inside if any(lo <= t <= hi for lo, hi in cov.covered)]
    assert got == covered
    missing = set(inside) - set(got)
    assert all(any(u.start <= t <= u.end for u in cov.uncovered) for t in missing)


async def test_page_cap_below_the_asked_limit_loses_nothing():
    stamps = hourly(24 * 7)
    venue = FakeVenue(stamps, cap=25)
    result = await fetch(venue, T0, stamps[-1] + HOUR - 1)
    assert_exact(result, stamps, T0, stamps[-1] + HOUR - 1)
    assert result.coverage.complete and len(result.rows) == len(stamps)
    assert PAGE_CAPPED in result.coverage.quirks
    assert all(limit == 100 for _, _, limit in venue.requests)


async def test_newest_first_pages_anchored_at_the_upper_bound_page_backwards():
    stamps = hourly(24 * 7, hours=1)
    for venue in (FakeVenue(stamps, anchor="until", newest_first=True, cap=25),
                  FakeVenue(stamps, newest_first=True)):
        since, until = T0 - 30 * 60_000, stamps[-1] + 5 * 60_000
        result = await fetch(venue, since, until)
        assert_exact(result, stamps, since, until)
        assert result.coverage.complete and len(result.rows) == len(stamps)
        assert NEWEST_FIRST in result.coverage.quirks


async def test_since_ignored_newest_n_with_an_honoured_upper_bound_pages_backwards():
    stamps = hourly(200, hours=4)
    venue = FakeVenue(stamps, ignore_since=True, cap=25)
    since, until = stamps[10] - 1, stamps[-1]
    result = await fetch(venue, since, until)
    assert_exact(result, stamps, since, until)
    assert result.coverage.complete


async def test_since_and_upper_bound_ignored_reports_older_settlements_unreachable():
    stamps = hourly(200, hours=8)
    venue = FakeVenue(stamps, ignore_since=True, ignore_until=True, cap=25)
    since, until = stamps[0], stamps[-1]
    result = await fetch(venue, since, until)
    assert_exact(result, stamps, since, until)
    cov = result.coverage
    assert [row["timestamp"] for row in result.rows] == stamps[-25:]
    assert (cov.covered_from, cov.covered_to) == (stamps[-25], until)
    (lost,) = cov.uncovered
    assert (lost.start, lost.end, lost.reason) == (since, stamps[-25] - 1, BEYOND_VENUE_HORIZON)
    assert SINCE_IGNORED in cov.quirks


async def test_upper_bound_ignored_keeps_only_rows_inside_the_request_and_proves_up_to_them():
    stamps = hourly(300, hours=4)
    venue = FakeVenue(stamps, ignore_until=True)
    since, until = stamps[100] + 1, stamps[150] + 1  # a gap window, anchored at a stored row
    result = await fetch(venue, since, until, anchor=stamps[100])
    assert_exact(result, stamps, since, until)
    assert [row["timestamp"] for row in result.rows] == stamps[101:151]
    assert result.coverage.complete and UNTIL_IGNORED in result.coverage.quirks
    assert len(venue.requests) == 1  # rows beyond the end proved the whole window at once
    # Without an anchor the stretch before the first row cannot be told apart from a venue that
    # answers its newest rows whatever since says: it is reported, not counted as covered.
    unanchored = await fetch(FakeVenue(stamps, ignore_until=True), since, until)
    assert_exact(unanchored, stamps, since, until)
    assert unanchored.coverage.covered == ((stamps[101], until),)
    assert unanchored.coverage.uncovered[0].reason == BEYOND_VENUE_HORIZON


async def test_an_empty_venue_proves_the_range_empty():
    result = await fetch(FakeVenue([]), T0, T0 + 48 * HOUR)
    assert result.rows == [] and result.coverage.complete and result.error is None


async def test_a_failing_symbol_keeps_its_rows_and_reports_the_rest_failed():
    stamps = hourly(24 * 7)
    venue = FakeVenue(stamps, cap=25, fail_after=3)
    until = stamps[-1]
    result = await fetch(venue, T0, until)
    assert_exact(result, stamps, T0, until)
    assert result.error == "ExchangeNotAvailable: 503 down" and result.transient
    # Three pages of 25, each after the first asked from (and repeating) the previous newest.
    assert [row["timestamp"] for row in result.rows] == stamps[:73]
    assert result.coverage.covered == ((T0, stamps[72]),)
    (rest,) = result.coverage.uncovered
    assert (rest.start, rest.end, rest.reason) == (stamps[72] + 1, until, FETCH_FAILED)
    bad = await fetch(FakeVenue(stamps, fail_after=0, error=ccxt.BadSymbol("no such")), T0, until)
    assert bad.rows == [] and bad.error == "BadSymbol: no such" and not bad.transient
    assert bad.coverage.covered == () and bad.coverage.uncovered[0].reason == FETCH_FAILED


async def test_a_venue_without_history_is_unsupported_without_a_request():
    venue = FakeVenue(hourly(5), supported=False)
    result = await fetch(venue, T0, T0 + 10 * HOUR)
    assert venue.requests == [] and result.rows == []
    assert result.coverage.uncovered[0].reason == VENUE_UNSUPPORTED


async def test_interval_change_inside_the_window_is_paged_by_time_alone():
    stamps = hourly(30, hours=8) + hourly(60, start=T0 + 30 * 8 * HOUR, hours=4)
    for venue in (FakeVenue(stamps, cap=25), FakeVenue(stamps, anchor="until", cap=25)):
        result = await fetch(venue, T0, stamps[-1])
        assert_exact(result, stamps, T0, stamps[-1])
        assert result.coverage.complete and len(result.rows) == len(stamps)


def _cov(since, until, covered, uncovered=()):
    return Coverage(since, until, tuple(covered), tuple(uncovered))


@pytest.mark.parametrize(
    ("stored", "coverage", "expected"),
    [
        (None, _cov(0, 99, [(0, 99)]), (0, 99)),
        ((0, 99), _cov(100, 199, [(100, 199)]), (0, 199)),
        ((0, 99), _cov(100, 199, [(100, 149)], []), (0, 149)),  # stopped short: refetched later
        ((50, 99), _cov(10, 20, [(10, 20)]), (50, 99)),  # an older gap window leaves it
    ],
)
def test_coverage_extends_only_by_what_touches_it(stored, coverage, expected):
    assert extend_coverage(stored, coverage) == expected


def test_coverage_jumps_a_hole_only_when_it_never_fills():
    from perpflow.history import Uncovered

    unreachable = Uncovered(100, 149, BEYOND_VENUE_HORIZON, "")
    failed = Uncovered(100, 149, FETCH_FAILED, "")
    assert extend_coverage((0, 99), _cov(100, 199, [(150, 199)], [unreachable])) == (150, 199)
    assert extend_coverage((0, 99), _cov(100, 199, [(150, 199)], [failed])) == (0, 99)
