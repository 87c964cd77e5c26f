"""The maintenance report: one row per object with its figures before and after and what was
done to it, as dicts (stored in ``maintenance_results``) and as markdown (the Prefect artifact)."""

from __future__ import annotations

from typing import Any

from perpflow.maintenance.model import ObjectStats, Outcome, Snapshot

STATUS_ORDER = ("failed", "timed_out", "done", "planned")


def report_rows(before: Snapshot, after: Snapshot, outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """``[{'object', 'kind', 'table_name', 'size_before', 'size_after' (bytes), 'dead_before',
    'dead_after', 'bloat_before', 'bloat_after' (fractions), 'bloat_source', 'actions'
    ('step:status; ...'), 'seconds', 'detail'}]``: objects acted on first, then the others by name.
    An object created by the run has no 'before' figures, one dropped no 'after' figures."""
    old, new = before.by_name(), after.by_name()
    names = set(old) | set(new) | {o.action.target for o in outcomes}
    rows = []
    for name in names:
        mine = [o for o in outcomes if o.action.target == name]
        b, a = old.get(name), new.get(name)
        ref: ObjectStats | None = a or b
        rows.append(
            {
                "object": name,
                "kind": ref.kind if ref else "partition",
                "table_name": ref.table if ref else None,
                "size_before": b and b.size_bytes,
                "size_after": a and a.size_bytes,
                "dead_before": b and b.dead_tuples,
                "dead_after": a and a.dead_tuples,
                "bloat_before": b and b.bloat,
                "bloat_after": a and a.bloat,
                "bloat_source": ref.bloat_source if ref else None,
                "actions": "; ".join(f"{o.action.step}:{o.status}" for o in mine) or None,
                "seconds": round(sum(o.seconds for o in mine), 3) if mine else None,
                "detail": "; ".join(o.detail for o in mine if o.detail) or None,
            }
        )
    return sorted(rows, key=lambda r: (r["actions"] is None, r["object"]))


def size_text(value: int | None) -> str:
    """Bytes as text for the report (``216.0 kB``); ``-`` for None."""
    if value is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "-"


def _num(value: float | None) -> str:
    return "-" if value is None else str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def markdown_report(
    dialect: str, rows: list[dict[str, Any]], outcomes: list[Outcome], dry_run: bool
) -> str:
    """The run's report as markdown: a summary, what was left for the next run, and the
    before/after table per object (all figures measured)."""
    counts = {status: sum(o.status == status for o in outcomes) for status in STATUS_ORDER}
    lines = [
        f"# maintain-database ({dialect}{', dry run' if dry_run else ''})",
        "",
        "Actions: " + ", ".join(f"{n} {status}" for status, n in counts.items() if n)
        if outcomes
        else "Nothing to do.",
        "",
    ]
    left = [o for o in outcomes if o.status in ("timed_out", "failed")]
    if left:
        lines += ["Left for the next run:", ""]
        lines += [f"- {o.action.step} {o.action.target}: {o.status} ({o.detail})" for o in left]
        lines.append("")
    lines += [
        (
            "| object | kind | size before | size after | dead before | dead after | bloat before "
            "| bloat after | action | seconds |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['object']} | {r['kind']} | {size_text(r['size_before'])} | "
            f"{size_text(r['size_after'])} | {_num(r['dead_before'])} | {_num(r['dead_after'])} | "
            f"{_pct(r['bloat_before'])} | {_pct(r['bloat_after'])} | {r['actions'] or ''} | "
            f"{_num(r['seconds'])} |"
        )
    return "\n".join(lines) + "\n"
