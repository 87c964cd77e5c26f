"""The market database: schema, engine and idempotent writes (SQLAlchemy 2 Core, async)."""

from perpflow.store.engine import create_engine, init_schema, run_engine
from perpflow.store.gaps import as_gap, read_gaps, record_gaps, resolve_gaps, settlements
from perpflow.store.monitoring import (
    previous_health_status,
    write_health_snapshot,
    write_quality_results,
)
from perpflow.store.reads import daily_funding, latest_tickers, stored_summary, ticker_window
from perpflow.store.schema import (
    MARKET_DATA,
    benchmark_results,
    collection_ledger,
    funding_gaps,
    funding_history,
    funding_rates,
    health_snapshots,
    instruments,
    metadata,
    quality_results,
    quarantine,
    tickers,
)
from perpflow.store.writes import (
    LedgerEntry,
    StoreResult,
    funding_watermarks,
    insert_new,
    record_failure,
    set_funding_intervals,
    store_batch,
    upsert_instruments,
)

__all__ = [
    "MARKET_DATA",
    "LedgerEntry",
    "StoreResult",
    "as_gap",
    "benchmark_results",
    "collection_ledger",
    "create_engine",
    "daily_funding",
    "funding_gaps",
    "funding_history",
    "funding_rates",
    "funding_watermarks",
    "health_snapshots",
    "init_schema",
    "insert_new",
    "instruments",
    "latest_tickers",
    "metadata",
    "previous_health_status",
    "quality_results",
    "quarantine",
    "read_gaps",
    "record_failure",
    "record_gaps",
    "resolve_gaps",
    "run_engine",
    "set_funding_intervals",
    "settlements",
    "store_batch",
    "stored_summary",
    "ticker_window",
    "tickers",
    "upsert_instruments",
    "write_health_snapshot",
    "write_quality_results",
]
