"""Progress of long work in a flow run (backfills, data quality over a long window), shown as a
Prefect progress artifact under a stable key: ``Progress`` counts units of one piece of work;
``VenueProgress`` follows per-venue work in symbol windows, failures included."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact


class Progress:
    """Counts ``done`` of ``total`` units of work. Once ``show`` was called (the work turned out
    to be long), every change is published as the progress artifact ``key`` (percent done);
    before that, units are only counted, so short runs publish nothing."""

    def __init__(self, key: str, total: int, description: str) -> None:
        self.key, self.total, self.description = key, total, description
        self.done = 0
        self._artifact: UUID | None = None
        self._shown = False
        self._lock = asyncio.Lock()

    async def show(self, note: str | None = None) -> None:
        """Publish the progress from now on (idempotent)."""
        async with self._lock:
            self._shown = True
            await self._publish(note)

    async def advance(self, units: int = 1, note: str | None = None) -> None:
        """Count ``units`` more done; publish when shown (``note`` extends the description)."""
        async with self._lock:
            self.done += units
            if self._shown:
                await self._publish(note)

    async def _publish(self, note: str | None) -> None:
        percent = 100.0 * min(self.done, self.total) / max(self.total, 1)
        description = f"{self.description}: {note}" if note else self.description
        if self._artifact is None:
            self._artifact = await acreate_progress_artifact(
                percent, key=self.key, description=description
            )
        else:
            await aupdate_progress_artifact(self._artifact, percent, description=description)


@dataclass
class _VenueWork:
    windows: int | None = None  # symbol windows planned (None: not planned yet)
    finished: set[tuple] = field(default_factory=set)
    failed: dict[tuple, str] = field(default_factory=dict)
    outcome: str | None = None  # set when the venue's step ended

    def fraction(self) -> float:
        if self.outcome is not None:
            return 1.0
        if not self.windows:
            return 0.0
        return min(len(self.finished), self.windows) / self.windows

    def describe(self, label: str) -> str:
        counted = f"{len(self.finished)}/{self.windows} windows" if self.windows else ""
        failed = f", {len(self.failed)} failed" if self.failed else ""
        if self.outcome is None:
            return f"{label}: {counted or 'planning'}{failed}"
        return f"{label}: {self.outcome}" + (f" ({counted}{failed})" if counted else "")


class VenueProgress:
    """Progress of per-venue work made of symbol windows (the sweep's funding-history backfill),
    published as the progress artifact ``key`` once ``show`` was called.

    Percent done: each venue weighs the same; a venue counts its finished windows (a window
    that failed is finished work, and counted as failed) until its step ends, then it is whole.
    The description says per venue how many windows are finished and failed, and how the step
    ended (``done``, ``failed: <error>``, ``skipped: venue down``...), never "done" for a venue
    that failed. Windows are identified by ``(symbol, since_ms, until_ms)``, so a retried task
    reporting them again counts each once. Publishing is throttled to one update per
    ``min_interval_s`` (ends of venues always publish)."""

    def __init__(self, key: str, venues: list[str], description: str,
                 min_interval_s: float = 1.0) -> None:
        self.key, self.description, self.min_interval_s = key, description, min_interval_s
        self.venues = {label: _VenueWork() for label in venues}
        self._artifact: UUID | None = None
        self._shown = False
        self._published_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def percent(self) -> float:
        """Percent done (0..100)."""
        works = list(self.venues.values())
        return 100.0 * sum(w.fraction() for w in works) / max(len(works), 1)

    def summary(self) -> str:
        """The description: the work, then one clause per venue."""
        venues = "; ".join(work.describe(label) for label, work in self.venues.items())
        return f"{self.description}: {venues}"

    async def plan(self, venue: str, windows: int, show: bool = False) -> None:
        """``venue`` will fetch ``windows`` symbol windows; ``show``: the work is long, publish
        from now on."""
        async with self._lock:
            self.venues[venue].windows = windows
            self._shown = self._shown or show
            await self._publish(force=show)

    async def window(self, venue: str, request: Any, result: Any) -> None:
        """A symbol window of ``venue`` finished: ``request`` has ``symbol``, ``since_ms``,
        ``until_ms``; ``result`` an ``error`` (None: fetched)."""
        key = (request.symbol, request.since_ms, request.until_ms)
        async with self._lock:
            work = self.venues[venue]
            work.finished.add(key)
            if getattr(result, "error", None):
                work.failed[key] = result.error
            else:
                work.failed.pop(key, None)
            await self._publish()

    async def finish(self, venue: str, outcome: str) -> None:
        """``venue``'s step ended: ``outcome`` is what the description says (e.g. ``done``,
        ``failed: TransientExchangeError: ...``)."""
        async with self._lock:
            self.venues[venue].outcome = outcome
            await self._publish(force=True)

    async def _publish(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._shown or (not force and now - self._published_at < self.min_interval_s):
            return
        self._published_at = now
        if self._artifact is None:
            self._artifact = await acreate_progress_artifact(
                self.percent, key=self.key, description=self.summary()
            )
        else:
            await aupdate_progress_artifact(self._artifact, self.percent,
                                            description=self.summary())


def step_outcome(outcome: dict[str, Any] | None) -> str:
    """How a venue step's ledger figures read in a progress description: ``not collected``
    (None), ``done``, ``done, N symbol(s) failed`` (partial), ``skipped: venue down``
    (circuit open), ``<status>: <error>`` otherwise (failed, empty, unsupported)."""
    if outcome is None:
        return "not collected"
    status = outcome["status"]
    if status == "ok":
        return "done"
    if status == "partial":
        return f"done, {outcome['failed']} symbol(s) failed"
    if status == "circuit_open":
        return "skipped: venue down (circuit open)"
    return f"{status}: {outcome.get('error') or ''}"[:200]
