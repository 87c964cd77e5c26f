"""Benchmark history: judge a run's figures against earlier runs, store them, render the report.

A figure with a baseline is judged by its ratio (robust to a busy or faster machine), one without
by its value. The reference is the median of the same figure over the last ``HISTORY_RUNS`` runs
recorded on a machine of the same size (cores and RAM); a figure worse than the reference by more
than ``margin`` (a fraction: 0.25 = 25 %) is a regression.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from perpflow.bench.figures import HIGHER, Figure, Machine
from perpflow.store import benchmark_results

HISTORY_RUNS = 5


@dataclass(frozen=True)
class Verdict:
    """A figure and how it compares with history: ``reference`` (median of the compared quantity
    over earlier runs, None when there are none), ``change`` (fraction, positive = better), and
    whether it is a ``regression``."""

    figure: Figure
    reference: float | None
    change: float | None
    regression: bool

    @property
    def status(self) -> str:
        """``regression``, ``over budget``, ``yardstick`` (a baseline or comparison, never
        flagged), ``new`` (no history) or ``ok``."""
        if self.regression:
            return "regression"
        if self.figure.over_budget:
            return "over budget"
        if self.figure.yardstick:
            return "yardstick"
        return "new" if self.reference is None else "ok"

    def as_row(self) -> dict[str, Any]:
        """One row of the results table artifact."""
        f = self.figure
        return {
            "name": f.name,
            "value": round(f.value, 3),
            "unit": f.unit,
            "baseline": f.baseline or "",
            "ratio": None if f.ratio is None else round(f.ratio, 3),
            "budget": f.budget,
            "previous": None if self.reference is None else round(self.reference, 3),
            "change_pct": None if self.change is None else round(self.change * 100, 1),
            "status": self.status,
        }


def compared_quantity(figure: Figure) -> float:
    """The ratio of a figure with a baseline, else its value."""
    return figure.ratio if figure.ratio is not None else figure.value


async def history(
    engine: AsyncEngine, machine: Machine, run_id: str, runs: int = HISTORY_RUNS
) -> dict[str, list[float]]:
    """``{name: [compared quantity, newest first]}`` of at most ``runs`` earlier runs (not
    ``run_id``) recorded on a machine with ``machine``'s cores and RAM."""
    t = benchmark_results
    query = (
        select(t.c.name, t.c.value, t.c.ratio)
        .where(
            t.c.run_id != run_id,
            t.c.cores == machine.cores,
            t.c.memory_bytes == machine.memory_bytes,
        )
        .order_by(t.c.recorded_at.desc())
    )
    found: dict[str, list[float]] = {}
    async with engine.connect() as conn:
        for name, value, ratio in (await conn.execute(query)).all():
            kept = found.setdefault(name, [])
            if len(kept) < runs:
                kept.append(ratio if ratio is not None else value)
    return found


def judge(figures: list[Figure], earlier: dict[str, list[float]], margin: float) -> list[Verdict]:
    """A verdict per figure against the median of its ``earlier`` quantities (yardsticks are
    compared but never flagged). Raises
    ``ValueError`` for a margin outside (0, 1)."""
    if not 0 < margin < 1:
        raise ValueError(f"regression_margin={margin!r}: expected a fraction between 0 and 1")
    verdicts = []
    for figure in figures:
        past = earlier.get(figure.name)
        if not past:
            verdicts.append(Verdict(figure, None, None, False))
            continue
        reference = statistics.median(past)
        now = compared_quantity(figure)
        sign = 1 if figure.better == HIGHER else -1
        change = sign * (now / reference - 1) if reference else None
        worse = change is not None and change < -margin and not figure.yardstick
        verdicts.append(Verdict(figure, reference, change, worse))
    return verdicts


async def record(
    engine: AsyncEngine, run_id: str, verdicts: list[Verdict], machine: Machine, at: datetime
) -> None:
    """Store the run's figures in ``benchmark_results`` (one transaction)."""
    rows = [
        {
            "run_id": run_id,
            **{k: v for k, v in v_.figure.as_row().items() if k not in ("database", "yardstick")},
            "regression": v_.regression,
            "cores": machine.cores,
            "memory_bytes": machine.memory_bytes,
            "python": machine.python,
            "db_server": v_.figure.database or machine.db_server,
            "recorded_at": at,
        }
        for v_ in verdicts
    ]
    async with engine.begin() as conn:
        await conn.execute(benchmark_results.insert(), rows)


def summary_markdown(run_id: str, verdicts: list[Verdict], machine: Machine, margin: float) -> str:
    """The run's report: machine, regressions and budget misses first, then every figure."""
    gib = machine.memory_bytes / 1024**3
    lines = [
        f"# Benchmark run {run_id}",
        "",
        (
            f"Machine: {machine.cores} cores, {gib:.1f} GiB RAM, Python {machine.python}, "
            f"workload database {machine.db_server}. Ratios compare with a baseline measured in the "
            f"same run; a regression is a figure worse than the median of its last {HISTORY_RUNS} runs "
            f"on a machine of this size by more than {margin:.0%}."
        ),
        "",
    ]
    flagged = [v for v in verdicts if v.status in ("regression", "over budget")]
    lines += [
        f"**{len(flagged)} figure(s) flagged.**"
        if flagged
        else "**No regression, every budget met.**",
        "",
    ]
    for v in flagged:
        f = v.figure
        why = (
            f"{-v.change:.0%} worse than the median of earlier runs"
            if v.regression
            else f"budget {f.budget:g} {f.unit}"
        )
        lines.append(
            f"- `{f.name}`: {f.value:.4g} {f.unit}"
            + (f" (ratio {f.ratio:.3g})" if f.ratio is not None else "")
            + f" - {why}"
        )
    lines += [
        "",
        "| figure | value | unit | baseline | ratio | budget | previous | change % | status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in verdicts:
        row = v.as_row()
        lines.append(
            "| "
            + " | ".join(
                "" if row[k] is None else str(row[k])
                for k in (
                    "name",
                    "value",
                    "unit",
                    "baseline",
                    "ratio",
                    "budget",
                    "previous",
                    "change_pct",
                    "status",
                )
            )
            + " |"
        )
    return "\n".join(lines) + "\n"
