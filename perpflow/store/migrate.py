"""Schema migrations (Alembic): bring any market database to the newest revision.

The revisions live in the package (``perpflow/store/migrations/versions``), so no ``alembic.ini``
or working directory is needed. A database made by the foundation's ``metadata.create_all``
(tables present, no ``alembic_version``) is recognized and stamped with revision ``0001`` first,
then upgraded in place: no row is lost. On PostgreSQL the whole upgrade is one transaction under
an advisory lock, so flows starting together migrate once.

``python -m perpflow.store [URL]`` upgrades ``URL`` (default ``PERPFLOW_DATABASE_URL``).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS = Path(__file__).with_name("migrations")
FOUNDATION_REVISION = "0001"
MIGRATION_LOCK_KEY = 0x70657270  # pg_advisory_xact_lock key shared by every perpflow migrator


def alembic_config() -> Config:
    """An Alembic ``Config`` pointing at the packaged migrations (no ini file)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


@lru_cache(maxsize=1)
def head_revisions() -> frozenset[str]:
    """The head revision id(s) of the packaged migrations."""
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(connection: Connection) -> frozenset[str]:
    """The revision id(s) stamped in ``connection``'s database (empty: never migrated)."""
    return frozenset(MigrationContext.configure(connection).get_current_heads())


def upgrade_connection(connection: Connection) -> None:
    """Upgrade the database behind a sync ``connection`` (in a transaction) to head.

    Cheap when already at head (one lock and one small read). Raises Alembic/SQLAlchemy errors
    unchanged when a revision fails (PostgreSQL then rolls the whole upgrade back).
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    current = current_revisions(connection)
    if current == head_revisions():
        return
    config = alembic_config()
    config.attributes["connection"] = connection
    if not current and inspect(connection).has_table("tickers"):
        command.stamp(config, FOUNDATION_REVISION)  # made by create_all before migrations
    command.upgrade(config, "head")


async def upgrade(engine: AsyncEngine) -> None:
    """Bring ``engine``'s database to the head revision (see ``upgrade_connection``)."""
    async with engine.begin() as conn:
        await conn.run_sync(upgrade_connection)
