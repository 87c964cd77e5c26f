"""What a benchmark measures: ``Figure`` rows, timing helpers, machine info."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Self

import psutil
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

HIGHER = "higher"
LOWER = "lower"


@dataclass(frozen=True)
class Figure:
    """One measured figure of a benchmark run.

    ``name``: dotted, stable across runs (``ingest.postgresql.store.batch500``); ``value`` in
    ``unit`` (``rows/s``, ``ms``, ``us``, ``MB``); ``baseline``: name of the figure of the same run
    it is compared with, ``ratio`` = value / baseline value; ``better``: ``'higher'`` or
    ``'lower'`` (for the ratio when there is one, else for the value); ``budget``: the value's
    limit, if the product sets one (in ``unit``); ``database``: server version of the database the
    figure was measured on (``PostgreSQL 15.2``, ``SQLite 3.40.1``), empty for none;
    ``yardstick``: a baseline or another way measured for comparison, not the product's own
    figure (shown, never flagged as a regression).
    """

    name: str
    value: float
    unit: str
    better: str
    baseline: str | None = None
    ratio: float | None = None
    budget: float | None = None
    database: str = ""
    note: str = ""
    yardstick: bool = False

    def as_row(self) -> dict[str, Any]:
        """The figure as a plain dict (column -> value)."""
        return asdict(self)

    @property
    def over_budget(self) -> bool:
        """True when the figure has a budget and misses it."""
        if self.budget is None:
            return False
        return self.value > self.budget if self.better == LOWER else self.value < self.budget


def compared(figure: Figure, baseline: Figure) -> Figure:
    """``figure`` with ``baseline`` (same unit) as its baseline and the ratio of their values.
    Raises ``ValueError`` for a baseline that is not positive (no ratio could be judged)."""
    if baseline.value <= 0:
        raise ValueError(f"{baseline.name} = {baseline.value!r}: a baseline must be positive")
    return Figure(**{**asdict(figure), "baseline": baseline.name, "ratio": figure.value / baseline.value})


@dataclass
class Clock:
    """Seconds of work accumulated over several timed sections (``time.perf_counter``)."""

    seconds: float = 0.0
    _started: float = field(default=0.0, repr=False)

    def __enter__(self) -> Self:
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.seconds += time.perf_counter() - self._started


@dataclass(frozen=True)
class Machine:
    """Where a run measured: logical ``cores``, ``memory_bytes`` (total RAM), ``python`` version,
    ``db_server`` (the workload database's server version)."""

    cores: int
    memory_bytes: int
    python: str
    db_server: str


async def server_version(engine: AsyncEngine) -> str:
    """``'PostgreSQL 15.2'`` or ``'SQLite 3.40.1'`` for ``engine``'s database."""
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            version = (await conn.execute(text("SHOW server_version"))).scalar_one()
            return f"PostgreSQL {version.split()[0]}"
        version = (await conn.execute(text("SELECT sqlite_version()"))).scalar_one()
        return f"SQLite {version}"


def machine(db_server: str) -> Machine:
    """This machine's size and Python version, with ``db_server`` as measured."""
    return Machine(
        cores=os.cpu_count() or 1,
        memory_bytes=psutil.virtual_memory().total,
        python=platform.python_version(),
        db_server=db_server,
    )
