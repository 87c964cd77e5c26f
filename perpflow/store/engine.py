"""Async engine for the market database: SQLite (embedded default) or PostgreSQL (asyncpg)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from perpflow.scope import borrow
from perpflow.settings import check_database_url
from perpflow.store.migrate import upgrade

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=30000",
)


def create_engine(url: str) -> AsyncEngine:
    """An ``AsyncEngine`` for ``url`` (``sqlite+aiosqlite:///path`` or ``postgresql+asyncpg://``).

    SQLite: the file's directory is created, and each connection runs in WAL mode with a 30 s busy
    timeout so that concurrent flows wait instead of failing. Raises ``ValueError`` (naming the
    field, password masked) for an unsupported URL.
    """
    check_database_url(url)
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            for pragma in SQLITE_PRAGMAS:
                cursor.execute(pragma)
            cursor.close()

        return engine
    return create_async_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)


async def init_schema(engine: AsyncEngine) -> None:
    """Bring the database to the newest schema revision (Alembic; idempotent, cheap at head).

    An empty database is created from scratch; one made before migrations existed is stamped and
    upgraded in place without losing rows (see ``perpflow.store.migrate``).
    """
    await upgrade(engine)


def run_engine(url: str) -> AbstractAsyncContextManager[AsyncEngine]:
    """Async context manager giving the run's engine for ``url`` (see ``RunScope``): one engine
    per database per flow run, disposed when the run's scope ends (or on exit, outside a run)."""
    return borrow(f"engine:{url}", lambda: create_engine(url), _dispose)


async def _dispose(engine: AsyncEngine) -> None:
    await engine.dispose()
