"""``python -m perpflow.store [URL]``: bring the database at ``URL`` (default
``PERPFLOW_DATABASE_URL``) to the newest schema revision."""

from __future__ import annotations

import asyncio
import sys

from perpflow.settings import load_settings
from perpflow.store.engine import create_engine, init_schema


async def _upgrade(url: str) -> None:
    engine = create_engine(url)
    try:
        await init_schema(engine)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(
        _upgrade(
            sys.argv[1] if len(sys.argv) > 1 else load_settings().database_url.get_secret_value()
        )
    )
