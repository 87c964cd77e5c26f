"""The market database: schema, engine and idempotent writes (SQLAlchemy 2 Core, async)."""

from perpflow.store.engine import create_engine, init_schema, run_engine
from perpflow.store.reads import stored_summary
from perpflow.store.schema import (
    MARKET_DATA,
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
    "collection_ledger",
    "create_engine",
    "funding_history",
    "funding_rates",
    "funding_watermarks",
    "init_schema",
    "insert_new",
    "instruments",
    "metadata",
    "quarantine",
    "record_failure",
    "run_engine",
    "set_funding_intervals",
    "store_batch",
    "stored_summary",
    "tickers",
    "upsert_instruments",
]
