"""Alembic environment: runs the revisions on a connection handed over by
``perpflow.store.migrate`` (``config.attributes['connection']``, inside its transaction), or, from
the ``alembic`` command line, on ``sqlalchemy.url`` / ``PERPFLOW_DATABASE_URL`` (async drivers)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from perpflow.settings import load_settings
from perpflow.store.schema import metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_on_url(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("perpflow migrations run online only (some revisions move rows)")
handed_over = context.config.attributes.get("connection")
if handed_over is not None:
    run_migrations(handed_over)
else:
    url = context.config.get_main_option("sqlalchemy.url")
    asyncio.run(_run_on_url(url or load_settings().database_url.get_secret_value()))
