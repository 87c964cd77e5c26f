"""Progress of long work in a flow run (backfills, data quality over a long window), shown as a
Prefect progress artifact under a stable key."""

from __future__ import annotations

import asyncio
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
