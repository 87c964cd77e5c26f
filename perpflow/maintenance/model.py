"""What maintenance measures, decides and does: plain data and the decision rules.

Units: sizes in bytes, bloat as a fraction of the object's size (0..1), times tz-aware UTC,
durations in seconds. ``decide`` is pure: the same snapshot and policy give the same actions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from perpflow.settings import Settings
from perpflow.store.partitions import PARTITIONED, partition_name

STEPS = ("integrity", "vacuum", "analyze", "reindex", "retention", "partitions", "checkpoint")
"""Every step; a flow run may switch any of them off (``decide(..., steps=...)``)."""

REINDEX_LEFTOVER_SUFFIXES = ("_ccnew", "_ccold")
"""Name endings PostgreSQL gives the indexes a failed ``REINDEX ... CONCURRENTLY`` leaves behind."""


@dataclass(frozen=True)
class Limits:
    """Bounds of every maintenance statement: how long it may wait for a lock
    (``lock_timeout``; SQLite ``busy_timeout``) and how long it may run (``statement_timeout``;
    SQLite: interrupted by a progress handler), in seconds."""

    lock_timeout: float
    statement_timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The ``PERPFLOW_MAINTENANCE_*_TIMEOUT_SECONDS`` settings."""
        return cls(
            settings.maintenance_lock_timeout_seconds,
            settings.maintenance_statement_timeout_seconds,
        )


@dataclass(frozen=True)
class Policy:
    """Decision thresholds (see README's settings table).

    ``dead_tuple_fraction``/``dead_tuple_min``: VACUUM a table whose dead tuples reach both.
    ``index_bloat_fraction``/``index_min_bytes``: REINDEX CONCURRENTLY a valid btree index whose
    estimated bloat and size reach both. ``sqlite_free_fraction``: VACUUM SQLite when free pages
    reach this share of the file. ``retention_days``: per table, rows older than this go.
    ``partitions_ahead_days``: daily partitions kept ready from today on.
    ``sqlite_delete_batch``: rows per retention DELETE on SQLite.
    """

    dead_tuple_fraction: float
    dead_tuple_min: int
    index_bloat_fraction: float
    index_min_bytes: int
    sqlite_free_fraction: float
    retention_days: dict[str, int]
    partitions_ahead_days: int
    sqlite_delete_batch: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        """The thresholds configured in ``settings`` (``PERPFLOW_MAINTENANCE_*`` and friends)."""
        return cls(
            dead_tuple_fraction=settings.maintenance_dead_tuple_fraction,
            dead_tuple_min=settings.maintenance_dead_tuple_min,
            index_bloat_fraction=settings.maintenance_index_bloat_fraction,
            index_min_bytes=settings.maintenance_index_min_bytes,
            sqlite_free_fraction=settings.maintenance_sqlite_free_fraction,
            retention_days=dict(settings.retention_days),
            partitions_ahead_days=settings.partitions_ahead_days,
            sqlite_delete_batch=settings.maintenance_sqlite_delete_batch,
        )


@dataclass(frozen=True)
class ObjectStats:
    """One measured object: ``kind`` is ``table``, ``partitioned table`` (no storage of its own),
    ``index`` or ``database`` (SQLite: the file). ``bloat`` is the estimated wasted fraction
    (``bloat_source``: ``pgstattuple``, ``estimate`` from catalog statistics, or ``freelist`` for
    SQLite's free pages); ``None`` where it does not apply or cannot be known."""

    name: str
    kind: str
    table: str | None = None
    size_bytes: int | None = None
    live_tuples: int | None = None
    dead_tuples: int | None = None
    bloat: float | None = None
    bloat_source: str | None = None
    last_vacuum: datetime | None = None
    last_autovacuum: datetime | None = None
    last_analyze: datetime | None = None
    last_autoanalyze: datetime | None = None
    valid: bool = True
    method: str | None = None  # index access method (btree, brin); SQLite: auto_vacuum mode


@dataclass(frozen=True)
class Partition:
    """A daily partition (PostgreSQL): ``state`` is ``attached``, ``detaching`` (a concurrent
    detach was interrupted) or ``detached`` (detached, not yet dropped)."""

    table: str
    name: str
    day: date
    state: str


@dataclass(frozen=True)
class Snapshot:
    """One measurement of the database (``dialect`` ``postgresql`` or ``sqlite``)."""

    dialect: str
    taken_at: datetime
    objects: list[ObjectStats]
    partitions: list[Partition] = field(default_factory=list)

    def by_name(self) -> dict[str, ObjectStats]:
        """``{object name: ObjectStats}``."""
        return {o.name: o for o in self.objects}


@dataclass(frozen=True)
class Action:
    """One thing to do to one object: ``statements`` run in order on an autocommit session
    (SQLite retention deletes in batches up to ``cutoff`` instead)."""

    step: str
    target: str
    reason: str
    statements: tuple[str, ...] = ()
    cutoff: datetime | None = None


@dataclass(frozen=True)
class Outcome:
    """What happened to an action: ``status`` ``done``, ``timed_out`` (a lock or statement
    timeout; left for the next run), ``failed`` or ``planned`` (dry run); ``seconds`` spent."""

    action: Action
    status: str
    seconds: float
    detail: str = ""


def quote(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def decide(
    snapshot: Snapshot, policy: Policy, steps: set[str], now: datetime | None = None
) -> list[Action]:
    """The actions the ``snapshot`` calls for under ``policy``, for the enabled ``steps``, in
    the order they should run. Raises ``ValueError`` for an unknown step name."""
    unknown = set(steps) - set(STEPS)
    if unknown:
        raise ValueError(f"steps: unknown step(s) {sorted(unknown)!r}; known: {', '.join(STEPS)}")
    now = now or datetime.now(UTC)
    plan = _decide_postgres if snapshot.dialect == "postgresql" else _decide_sqlite
    return [action for action in plan(snapshot, policy, now, steps) if action.step in steps]


def _dead_share(o: ObjectStats) -> float:
    total = (o.live_tuples or 0) + (o.dead_tuples or 0)
    return (o.dead_tuples or 0) / total if total else 0.0


def _cutoff(now: datetime, days: int) -> datetime:
    return now - timedelta(days=days)


def _expired(p: Partition, policy: Policy, now: datetime) -> bool:
    days = policy.retention_days.get(p.table)
    end = datetime.combine(p.day + timedelta(days=1), time(), UTC)
    return days is not None and end <= _cutoff(now, days)


def _retire(p: Partition, days: int) -> Action:
    parent, name = quote(p.table), quote(p.name)
    detach = {
        "attached": (f"ALTER TABLE {parent} DETACH PARTITION {name} CONCURRENTLY",),
        "detaching": (f"ALTER TABLE {parent} DETACH PARTITION {name} FINALIZE",),
        "detached": (),
    }[p.state]
    return Action(
        "retention",
        p.name,
        f"all rows older than {days} days",
        (*detach, f"DROP TABLE IF EXISTS {name}"),
    )


def _decide_postgres(
    snapshot: Snapshot, policy: Policy, now: datetime, steps: set[str]
) -> list[Action]:
    expired = [p for p in snapshot.partitions if _expired(p, policy, now)]
    # What retention drops this run is not vacuumed or reindexed first.
    leaving = {p.name for p in expired} if "retention" in steps else set()
    objects = [o for o in snapshot.objects if o.name not in leaving and o.table not in leaving]
    actions: list[Action] = []
    for o in objects:
        leftover = o.name.rstrip("0123456789").endswith(REINDEX_LEFTOVER_SUFFIXES)
        if o.kind == "index" and not o.valid and leftover:
            actions.append(
                Action(
                    "reindex",
                    o.name,
                    "invalid leftover of a failed concurrent reindex",
                    (f"DROP INDEX CONCURRENTLY IF EXISTS {quote(o.name)}",),
                )
            )
    for o in objects:
        dead = o.dead_tuples or 0
        if (
            o.kind == "table"
            and dead >= max(policy.dead_tuple_min, 1)
            and _dead_share(o) >= policy.dead_tuple_fraction
        ):
            actions.append(
                Action(
                    "vacuum",
                    o.name,
                    f"{dead} dead tuples ({_dead_share(o):.0%})",
                    (f"VACUUM (ANALYZE) {quote(o.name)}",),
                )
            )
    for o in objects:
        if (
            o.kind == "index"
            and o.valid
            and o.method == "btree"
            and o.bloat is not None
            and o.bloat >= policy.index_bloat_fraction
            and (o.size_bytes or 0) >= policy.index_min_bytes
        ):
            actions.append(
                Action(
                    "reindex",
                    o.name,
                    f"estimated bloat {o.bloat:.0%} ({o.bloat_source})",
                    (f"REINDEX INDEX CONCURRENTLY {quote(o.name)}",),
                )
            )
    for o in objects:
        if o.kind == "partitioned table":
            actions.append(
                Action(
                    "analyze",
                    o.name,
                    "autovacuum never analyzes a partitioned parent",
                    (f"ANALYZE {quote(o.name)}",),
                )
            )
    actions += [_retire(p, policy.retention_days[p.table]) for p in expired]
    existing = {p.name for p in snapshot.partitions}
    for table in PARTITIONED:
        for ahead in range(policy.partitions_ahead_days + 1):
            day = now.date() + timedelta(days=ahead)
            if partition_name(table, day) not in existing:
                call = f"SELECT perpflow_ensure_partition('{table}', DATE '{day.isoformat()}')"
                actions.append(
                    Action("partitions", partition_name(table, day), "upcoming day", (call,))
                )
    return actions


def _decide_sqlite(
    snapshot: Snapshot, policy: Policy, now: datetime, steps: set[str]
) -> list[Action]:
    database = next(o for o in snapshot.objects if o.kind == "database")
    actions = [Action("integrity", database.name, "every run", ("PRAGMA quick_check",))]
    for table, days in sorted(policy.retention_days.items()):
        actions.append(
            Action("retention", table, f"rows older than {days} days", cutoff=_cutoff(now, days))
        )
    if (database.bloat or 0) >= policy.sqlite_free_fraction:
        actions.append(
            Action(
                "vacuum",
                database.name,
                f"{database.bloat:.0%} of the file is free pages",
                ("PRAGMA incremental_vacuum" if database.method == "incremental" else "VACUUM",),
            )
        )
    actions += [
        Action("reindex", database.name, "every run", ("REINDEX",)),
        Action(
            "analyze",
            database.name,
            "every run",
            ("PRAGMA analysis_limit=1000", "ANALYZE", "PRAGMA optimize"),
        ),
        Action("checkpoint", database.name, "every run", ("PRAGMA wal_checkpoint(TRUNCATE)",)),
    ]
    return actions
