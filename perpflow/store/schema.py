"""SQLAlchemy 2 Core schema: one natural primary key per table (see DESIGN.md's data model).

``tickers`` and ``funding_rates`` hold observations, keyed by ``(instrument_key, ts, obs_key)``:
which instrument (``instrument_key``, a 64-bit digest of ``(exchange, symbol)``, kept beside the
``exchange`` and ``symbol`` columns), when the venue says it observed it (``ts``: the venue's
time, else the receipt time, as ``ts_source`` tells; ``collected_at`` is always the receipt
time), and what it observed (``obs_key``, a 64-bit digest of the row's value columns,
``observation_key()``). A duplicate is only the identical observation already stored: a venue
whose ``timestamp`` is its last trade's time answers later polls with the same ``ts`` but a new
mark price or funding rate, and those are new rows. The integers keep index entries at 24 bytes
instead of two strings, a time and the values. ``instruments.instrument_key`` is unique: two
instruments whose digests collided would fail loudly when the second is listed.

All timestamps are timezone-aware UTC (``TIMESTAMPTZ`` on PostgreSQL; ISO text on SQLite, given
back as aware datetimes). Prices are in quote currency; funding rates are fractions per funding
interval, stored as given, with ``interval_hours`` beside them.

The schema is changed through Alembic revisions (``perpflow/store/migrations``); on PostgreSQL
``tickers`` and ``funding_rates`` are partitioned by day there (``perpflow.store.partitions``).
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every dialect (naive values are refused)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"timestamp {value!r}: naive datetime; expected timezone-aware UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()


def _ts(name: str, **kw) -> Column:
    return Column(name, UTCDateTime(), **kw)


def _digest(data: bytes) -> int:
    """The first 8 bytes of SHA-256 over ``data`` as a signed big-endian 64-bit integer."""
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big", signed=True)


@lru_cache(maxsize=65536)
def instrument_key(exchange: str, symbol: str) -> int:
    """The signed 64-bit ``instrument_key`` of ``(exchange, symbol)``: the first 8 bytes of
    SHA-256 over ``exchange``, a unit separator (0x1F) and ``symbol`` (UTF-8), big-endian."""
    return _digest(f"{exchange}\x1f{symbol}".encode())


def _instrument_key_column() -> Column:
    return Column("instrument_key", BigInteger, nullable=False)


instruments = Table(
    "instruments",
    metadata,
    Column("exchange", String(64), primary_key=True),
    Column("symbol", String(128), primary_key=True),
    Column("market_id", String(128)),
    Column("base", String(32)),
    Column("quote", String(32)),
    Column("settle", String(32)),
    Column("linear", Boolean),
    Column("inverse", Boolean),
    Column("contract_size", Float),
    Column("active", Boolean, nullable=False),
    _ts("first_seen", nullable=False),
    _ts("last_seen", nullable=False),
    _instrument_key_column(),
    UniqueConstraint("instrument_key", name="instruments_instrument_key_key"),
)

def _observation_key_column() -> Column:
    return Column("obs_key", BigInteger, nullable=False)


# Units of the ticker volumes (``perpflow.normalize.ticker_volumes`` brings ccxt's values to
# them): ``base_volume`` in base currency, ``quote_volume`` in quote currency, both over the
# venue's rolling 24 h; ``contract_volume`` in contracts (each ``instruments.contract_size`` base
# units on a linear market, quote units on an inverse one) when the venue counts its volume in
# contracts, else NULL. Prices in quote currency. Rows stored before revision 0008 keep the
# volumes as ccxt gave them.
tickers = Table(
    "tickers",
    metadata,
    Column("exchange", String(64), nullable=False),
    Column("symbol", String(128), nullable=False),
    _ts("ts", nullable=False),
    Column("ts_source", String(16), nullable=False),
    Column("bid", Float),
    Column("ask", Float),
    Column("last", Float),
    Column("mark_price", Float),
    Column("index_price", Float),
    Column("base_volume", Float),
    Column("quote_volume", Float),
    _ts("collected_at", nullable=False),
    Column("run_id", String(64)),
    _instrument_key_column(),
    Column("contract_volume", Float),
    _observation_key_column(),
    PrimaryKeyConstraint("instrument_key", "ts", "obs_key", name="tickers_pkey"),
)

funding_rates = Table(
    "funding_rates",
    metadata,
    Column("exchange", String(64), nullable=False),
    Column("symbol", String(128), nullable=False),
    _ts("ts", nullable=False),
    Column("ts_source", String(16), nullable=False),
    Column("funding_rate", Float, nullable=False),
    _ts("funding_ts"),
    Column("next_funding_rate", Float),
    _ts("next_funding_ts"),
    Column("mark_price", Float),
    Column("index_price", Float),
    Column("interval_hours", Float),
    _ts("collected_at", nullable=False),
    Column("run_id", String(64)),
    _instrument_key_column(),
    _observation_key_column(),
    PrimaryKeyConstraint("instrument_key", "ts", "obs_key", name="funding_rates_pkey"),
)

# The value columns of each observation table, in digest order (``observation_key``): every
# column but the key's (``exchange``, ``symbol``, ``ts``; ``instrument_key``, ``obs_key``) and
# the bookkeeping (``collected_at``, ``run_id``). The first is text, the others numbers or times.
OBSERVED = {
    "tickers": (
        "ts_source",
        "bid",
        "ask",
        "last",
        "mark_price",
        "index_price",
        "base_volume",
        "quote_volume",
        "contract_volume",
    ),
    "funding_rates": (
        "ts_source",
        "funding_rate",
        "funding_ts",
        "next_funding_rate",
        "next_funding_ts",
        "mark_price",
        "index_price",
        "interval_hours",
    ),
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@lru_cache(maxsize=None)
def _layout(table: str) -> tuple[int, tuple[int, ...]]:
    """``(numbers per row, positions of the times among them)`` of ``table``'s observations."""
    kinds = metadata.tables[table].c
    names = OBSERVED[table][1:]
    return len(names), tuple(
        i for i, name in enumerate(names) if isinstance(kinds[name].type, UTCDateTime)
    )


def _micros(values: Sequence[Any], times: tuple[int, ...]) -> list[Any]:
    """``values[1:]`` with each time at ``times`` as microseconds since the epoch (UTC)."""
    numbers = list(values[1:])
    for i in times:
        if numbers[i] is not None:
            numbers[i] = (numbers[i] - _EPOCH) // _MICROSECOND
    return numbers


def observation_keys(table: str, rows: Iterable[Sequence[Any]]) -> list[int]:
    """The ``obs_key`` of each of ``rows`` of ``table`` (``'tickers'`` or ``'funding_rates'``),
    every row being its ``OBSERVED[table]`` values in that order.

    ``obs_key`` is the signed 64-bit big-endian head of SHA-256 over the UTF-8 text of the first
    value (``ts_source``), a unit separator (0x1F), then each other value as a little-endian IEEE
    754 double: a number as given (-0.0 as 0.0), a time as whole microseconds since 1970-01-01
    UTC (exact as a double until the year 2255), a missing value as NaN (stored numbers are
    finite; a missing text as empty, which the NOT NULL column refuses anyway). The same values
    give the same key in every process and on both stores (floats round-trip exactly through
    PostgreSQL ``double precision`` and SQLite ``REAL``). A batch's numbers are packed at once:
    about 1.1 µs a row. Raises ``KeyError`` for another table; ``TypeError`` for a value of
    another kind.
    """
    width, times = _layout(table)
    rows = list(rows)
    numbers = [_micros(row, times) for row in rows] if times else [row[1:] for row in rows]
    nan = math.nan
    flat = [nan if v is None else v + 0.0 for values in numbers for v in values]
    packed = memoryview(struct.pack(f"<{len(flat)}d", *flat))
    step, sha256, as_int = 8 * width, hashlib.sha256, int.from_bytes
    return [
        as_int(
            sha256((row[0] or "").encode() + b"\x1f" + packed[i * step : (i + 1) * step])
            .digest()[:8],
            "big",
            signed=True,
        )
        for i, row in enumerate(rows)
    ]


def observation_key(table: str, values: Sequence[Any]) -> int:
    """The ``obs_key`` of one row's ``OBSERVED[table]`` ``values`` (``observation_keys``)."""
    return observation_keys(table, [values])[0]


funding_history = Table(
    "funding_history",
    metadata,
    Column("exchange", String(64), primary_key=True),
    Column("symbol", String(128), primary_key=True),
    _ts("funding_ts", primary_key=True),
    Column("funding_rate", Float, nullable=False),
    Column("interval_hours", Float),
    _ts("collected_at", nullable=False),
    Column("run_id", String(64)),
)

def quarantine_digest(
    exchange: str, dataset: str, symbol: str | None, reason: str, payload: Any
) -> str:
    """The ``quarantine.digest`` of one refused value: hex SHA-256 over the canonical JSON
    (sorted keys, no spaces, ASCII) of ``[exchange, dataset, symbol, reason, payload]``. The same
    payload refused for the same reason gives the same digest in every run, so quarantine holds
    it once (revision 0010 computes existing rows' digests by this rule, frozen there)."""
    text = json.dumps(
        [exchange, dataset, symbol, reason, payload],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _digest_of_insert(context) -> str:
    """``quarantine_digest`` of the row being inserted, for an INSERT that does not give one."""
    row = context.get_current_parameters()
    return quarantine_digest(
        row["exchange"], row["dataset"], row.get("symbol"), row["reason"], row["payload"]
    )


# One row per (source, refused payload, reason): ``digest`` (``quarantine_digest``) is unique, so
# a payload refused again (a history row on every sweep, a retried store) is not stored twice.
quarantine = Table(
    "quarantine",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("exchange", String(64), nullable=False),
    Column("dataset", String(32), nullable=False),
    Column("symbol", String(128)),
    Column("payload", JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    Column("reason", Text, nullable=False),
    Column("run_id", String(64)),
    _ts("quarantined_at", nullable=False),
    Column("digest", String(64), nullable=False, default=_digest_of_insert),
    UniqueConstraint("digest", name="quarantine_digest_key"),
)

collection_ledger = Table(
    "collection_ledger",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("exchange", String(64), primary_key=True),
    Column("dataset", String(32), primary_key=True),
    Column("requested", Integer, nullable=False),
    Column("received", Integer, nullable=False),
    Column("stored", Integer, nullable=False),
    Column("duplicates", Integer, nullable=False),
    Column("quarantined", Integer, nullable=False),
    Column("failed", Integer, nullable=False, server_default="0"),
    Column("failed_symbols", JSON().with_variant(JSONB(), "postgresql")),  # {symbol: error}
    Column("attempts", Integer, nullable=False, server_default="1"),
    Column("status", String(16), nullable=False),  # ok | partial | failed | unsupported | empty
    Column("batch_id", String(64)),  # the stored Batch's identity: a retry finds its own row
    Column("error", Text),
    Column("latency_ms", Float),
    _ts("started_at", nullable=False),
    _ts("finished_at", nullable=False),
)

MARKET_DATA = {t.name: t for t in (tickers, funding_rates, funding_history)}

# maintain-database: the figures of each run's report, one row per object, for trends.
maintenance_results = Table(
    "maintenance_results",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("object", String(128), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("table_name", String(128)),
    Column("size_before", BigInteger),
    Column("size_after", BigInteger),
    Column("dead_before", BigInteger),
    Column("dead_after", BigInteger),
    Column("bloat_before", Float),
    Column("bloat_after", Float),
    Column("bloat_source", String(16)),
    Column("actions", Text),
    Column("seconds", Float),
    Column("detail", Text),
    _ts("recorded_at", nullable=False),
)


# Monitoring: data-quality results, funding-history gaps handed to the sweep, health snapshots.

quality_results = Table(
    "quality_results",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("expectation", String(128), primary_key=True),  # stable key, e.g. tickers.bid_le_ask
    Column("dataset", String(32), nullable=False),
    Column("expectation_type", String(128), nullable=False),
    Column("success", Boolean, nullable=False),
    Column("element_count", Integer),
    Column("unexpected_count", Integer),
    Column("unexpected_percent", Float),
    Column("examples", JSON().with_variant(JSONB(), "postgresql")),
    _ts("window_start", nullable=False),
    _ts("window_end", nullable=False),
    _ts("checked_at", nullable=False),
)

funding_gaps = Table(
    "funding_gaps",
    metadata,
    Column("exchange", String(64), primary_key=True),
    Column("symbol", String(128), primary_key=True),
    _ts("gap_from", primary_key=True),  # first missing settlement
    _ts("gap_to", nullable=False),  # last missing settlement
    Column("interval_hours", Float, nullable=False),
    Column("missing", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # open | filled | unfillable
    Column("detail", Text),
    _ts("found_at", nullable=False),
    Column("found_run_id", String(64)),
    _ts("resolved_at"),
    Column("resolved_run_id", String(64)),
)

health_snapshots = Table(
    "health_snapshots",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("name", String(160), primary_key=True),  # check name, e.g. freshness.okx.tickers
    Column("status", String(8), nullable=False),  # OK | WARN | CRIT
    Column("value", Float),
    Column("unit", String(16)),
    Column("detail", Text),
    _ts("taken_at", nullable=False),
)


# -- benchmark runs (run-benchmarks) -----------------------------------------------------------
# One row per measured figure of a run: value in unit (rows/s, ms, us, MB), the same run's
# baseline figure and value/baseline ratio, budget, whether it was flagged as a regression against
# earlier runs, and the machine it was measured on (logical cores, RAM bytes, Python, DB server).
benchmark_results = Table(
    "benchmark_results",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("value", Float, nullable=False),
    Column("unit", String(16), nullable=False),
    Column("better", String(8), nullable=False),
    Column("baseline", String(128)),
    Column("ratio", Float),
    Column("budget", Float),
    Column("regression", Boolean, nullable=False),
    Column("note", Text),
    Column("cores", Integer, nullable=False),
    Column("memory_bytes", BigInteger, nullable=False),
    Column("python", String(32), nullable=False),
    Column("db_server", String(64), nullable=False),
    _ts("recorded_at", nullable=False),
)


# -- realized funding: proven coverage and funding intervals with history -------------------------
# funding_coverage: per instrument, the contiguous range (UTC) in which every settlement the venue
# serves is stored, as proven by the timestamps paging saw (perpflow.history); the sweep plans
# from covered_to. funding_intervals: the funding interval (hours) in force from valid_from until
# valid_to (NULL: still in force), learned from the venue or inferred from settlement spacing; an
# interval never known has no row (never an assumed 8 h).
funding_coverage = Table(
    "funding_coverage",
    metadata,
    Column("exchange", String(64), primary_key=True),
    Column("symbol", String(128), primary_key=True),
    _ts("covered_from", nullable=False),
    _ts("covered_to", nullable=False),
    _ts("updated_at", nullable=False),
    Column("run_id", String(64)),
)

funding_intervals = Table(
    "funding_intervals",
    metadata,
    Column("exchange", String(64), primary_key=True),
    Column("symbol", String(128), primary_key=True),
    _ts("valid_from", primary_key=True),
    _ts("valid_to"),
    Column("interval_hours", Float, nullable=False),
    Column("source", String(16), nullable=False),  # venue | inferred
    CheckConstraint("source IN ('venue', 'inferred')", name="funding_intervals_source_check"),
)


# -- the daily completeness certificate (certify-completeness; perpflow.completeness) -------------
# One row per (venue, dataset, UTC day): observations expected (snapshots: one per collector
# schedule interval per instrument selected; realized funding: one per settlement by the interval
# in force), stored, explained (``reasons``: {reason: count}, ``detail``: the symbols and errors
# behind them) and unexplained = expected - stored - explained (never negative).
completeness = Table(
    "completeness",
    metadata,
    Column("exchange", String(64), primary_key=True),
    Column("dataset", String(32), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("instruments", Integer, nullable=False),
    Column("expected", Integer, nullable=False),
    Column("stored", Integer, nullable=False),
    Column("explained", Integer, nullable=False),
    Column("unexplained", Integer, nullable=False),
    Column("reasons", JSON().with_variant(JSONB(), "postgresql")),
    Column("detail", Text),
    _ts("certified_at", nullable=False),
    Column("run_id", String(64)),
)


# -- per-venue circuit breaker (perpflow.circuit) ------------------------------------------------
# One row per venue label: closed | open | half_open; failures counts consecutive failed steps
# while closed; down_since is when the outage began (kept across re-opens), opened_at the start of
# the current cool-down, probe_at when the current half-open probe was claimed.
venue_circuits = Table(
    "venue_circuits",
    metadata,
    Column("exchange", String(64), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("failures", Integer, nullable=False),
    _ts("down_since"),
    _ts("opened_at"),
    _ts("probe_at"),
    Column("last_error", Text),
    _ts("updated_at", nullable=False),
    CheckConstraint("state IN ('closed', 'open', 'half_open')", name="venue_circuits_state_check"),
)
