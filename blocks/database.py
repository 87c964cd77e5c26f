"""The ``perpflow-market-database`` block: where market data is stored."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import SecretStr


class MarketDatabase(Block):
    """The market database's SQLAlchemy URL (kept secret: it may hold a password).

    ``sqlite+aiosqlite:///data/perpflow.sqlite`` (embedded) or
    ``postgresql+asyncpg://user:password@host:5432/dbname`` (production).
    """

    _block_type_name = "perpflow Market Database"
    _block_type_slug = "perpflow-market-database"
    _description = "SQLAlchemy URL of perpflow's market database (SQLite or PostgreSQL)."

    url: SecretStr
