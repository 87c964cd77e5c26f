"""Async engine for the market database: SQLite (embedded default) or PostgreSQL (asyncpg).

Every connection has a connect timeout and every statement a time limit
(``PERPFLOW_DATABASE_CONNECT_TIMEOUT_SECONDS``, ``PERPFLOW_DATABASE_STATEMENT_TIMEOUT_SECONDS``):
PostgreSQL gets asyncpg's ``timeout`` (connect) and ``command_timeout`` (client side, a little
above the server's limit, for a server that stops answering) and the server's
``statement_timeout``; SQLite waits for a lock at most ``max(30 s, connect timeout)``. A database
that does not answer in time fails with ``DatabaseTimeout`` naming the host, port and database
(never the user's password), not a bare ``TimeoutError``.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from perpflow.scope import borrow
from perpflow.settings import Settings, check_database_url
from perpflow.store.migrate import upgrade

SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL")
SQLITE_MIN_LOCK_WAIT_S = 30.0
# The client gives up this long (at most the statement limit again) after the server's
# statement_timeout should have answered.
CLIENT_SLACK_S = 5.0


class DatabaseTimeout(TimeoutError):
    """The database did not answer in time: the message names where (host, port, database; no
    credentials), what (connect or a statement) and the setting that bounds it."""


class DatabaseTimeouts(BaseSettings):
    """The database time limits, read from the environment like ``Settings`` (seconds)."""

    model_config = SettingsConfigDict(env_prefix="PERPFLOW_", extra="ignore")

    database_connect_timeout_seconds: float = Settings.model_fields[
        "database_connect_timeout_seconds"
    ]
    database_statement_timeout_seconds: float = Settings.model_fields[
        "database_statement_timeout_seconds"
    ]
    maintenance_statement_timeout_seconds: float = Settings.model_fields[
        "maintenance_statement_timeout_seconds"
    ]


def where(url: URL) -> str:
    """``host:port/database`` of ``url`` (SQLite: the file), never user or password."""
    if url.drivername.startswith("sqlite"):
        return f"sqlite file {url.database}"
    return f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def _postgres_args(limits: DatabaseTimeouts) -> dict:
    statement_ms = int(limits.database_statement_timeout_seconds * 1000)
    # Maintenance raises statement_timeout for its own statements (SET, then RESET to this
    # default): the client-side limit must not cut those short.
    longest = max(limits.database_statement_timeout_seconds,
                  limits.maintenance_statement_timeout_seconds)
    return {
        "timeout": limits.database_connect_timeout_seconds,
        "command_timeout": longest + min(CLIENT_SLACK_S, limits.database_statement_timeout_seconds),
        "server_settings": {"statement_timeout": str(statement_ms)},
    }


def _explain_timeouts(engine: AsyncEngine, url: URL, limits: DatabaseTimeouts) -> None:
    """Turn a bare timeout of a connect or a statement into ``DatabaseTimeout``."""

    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(dialect, _record, cargs, cparams):
        try:
            return dialect.loaded_dbapi.connect(*cargs, **cparams)
        except TimeoutError:
            raise DatabaseTimeout(
                f"database {where(url)}: no connection within "
                f"{limits.database_connect_timeout_seconds:g} s "
                "(PERPFLOW_DATABASE_CONNECT_TIMEOUT_SECONDS); is the server up and answering?"
            ) from None

    @event.listens_for(engine.sync_engine, "handle_error")
    def _statement(context) -> None:
        error = context.original_exception
        if not isinstance(error, TimeoutError) or isinstance(error, DatabaseTimeout):
            return
        raise DatabaseTimeout(
            f"database {where(url)}: no answer to a statement within its time limit "
            f"(PERPFLOW_DATABASE_STATEMENT_TIMEOUT_SECONDS = "
            f"{limits.database_statement_timeout_seconds:g} s); the server stopped answering"
        ) from None


def create_engine(url: str) -> AsyncEngine:
    """An ``AsyncEngine`` for ``url`` (``sqlite+aiosqlite:///path`` or ``postgresql+asyncpg://``).

    SQLite: the file's directory is created, and each connection runs in WAL mode, waiting for a
    lock at most ``max(30 s, connect timeout)`` so that concurrent flows wait instead of failing.
    PostgreSQL: connect and statement time limits (see the module). Raises ``ValueError``
    (naming the field, password masked) for an unsupported URL; its connections raise
    ``DatabaseTimeout`` when the database does not answer in time.
    """
    check_database_url(url)
    parsed = make_url(url)
    limits = DatabaseTimeouts()
    if parsed.drivername.startswith("sqlite"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        lock_wait = max(SQLITE_MIN_LOCK_WAIT_S, limits.database_connect_timeout_seconds)
        engine = create_async_engine(url, connect_args={"timeout": lock_wait})

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            for pragma in (*SQLITE_PRAGMAS, f"PRAGMA busy_timeout={int(lock_wait * 1000)}"):
                cursor.execute(pragma)
            cursor.close()

    else:
        engine = create_async_engine(
            url, pool_size=5, max_overflow=5, pool_pre_ping=True,
            connect_args=_postgres_args(limits),
        )
    _explain_timeouts(engine, parsed, limits)
    return engine


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
