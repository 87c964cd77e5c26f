"""The market database: schema, engine and idempotent writes (SQLAlchemy 2 Core, async)."""

from perpflow.store.engine import create_engine, init_schema, run_engine
from perpflow.store.reads import daily_funding, latest_tickers, stored_summary, ticker_window
from perpflow.store.schema import (
    MARKET_DATA,
    benchmark_results,
    collection_ledger,
    funding_history,
    funding_rates,
    instruments,
    metadata,
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
    "benchmark_results",
    "collection_ledger",
    "create_engine",
    "daily_funding",
    "funding_history",
    "funding_rates",
    "funding_watermarks",
    "init_schema",
    "insert_new",
    "instruments",
    "latest_tickers",
    "metadata",
    "quarantine",
    "record_failure",
    "run_engine",
    "set_funding_intervals",
    "store_batch",
    "stored_summary",
    "ticker_window",
    "tickers",
    "upsert_instruments",
]
