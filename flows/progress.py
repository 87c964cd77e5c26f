"""Progress of long work in a flow run (backfills, data quality over a long window), shown as a
Prefect progress artifact under a stable key."""

from __future__ import annotations

import asyncio
from uuid import UUID

from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact


class Progress:
    """Counts ``total`` units of work and shows ``done / total`` (in percent) as the progress
    artifact ``key``. The artifact is created on the first ``advance`` (work that never starts
    shows none); ``total`` may grow while the work is being discovered."""

    def __init__(self, key: str, total: int, description: str) -> None:
        self.key, self.total, self.description = key, total, description
        self.done = 0
        self._artifact: UUID | None = None
        self._lock = asyncio.Lock()

    async def advance(self, units: int = 1, note: str | None = None) -> None:
        """Count ``units`` more done and publish the percentage (``note`` replaces the
        description)."""
        async with self._lock:
            self.done += units
            percent = 100.0 * self.done / max(self.total, self.done, 1)
            description = f"{self.description}: {note}" if note else self.description
            if self._artifact is None:
                self._artifact = await acreate_progress_artifact(
                    percent, key=self.key, description=description
                )
            else:
                await aupdate_progress_artifact(self._artifact, percent, description=description)
