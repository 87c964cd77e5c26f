"""Shared fixtures: real databases (a SQLite file, a fresh PostgreSQL database), ../shared paths."""

from __future__ import annotations

import os
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from prefect.settings import PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings
from prefect.testing.utilities import prefect_test_harness

from perpflow.store import create_engine, init_schema

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
PG_ADMIN_DSN = os.environ.get("PERPFLOW_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def prefect_server():
    """A temporary Prefect API (SQLite), one for the whole session: modules that run flows use it
    with ``pytestmark = pytest.mark.usefixtures("prefect_server")``."""
    # No telemetry from the test server: nothing leaves the machine.
    with temporary_settings({PREFECT_SERVER_ANALYTICS_ENABLED: False}):
        with prefect_test_harness(server_startup_timeout=120):
            yield


def shared_dir(*parts: str) -> Path:
    """A path under ../shared, or skip the test (with the reason) when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (a bare clone without ../shared); CI provides it")
    return path


async def _create_pg_database() -> str:
    name = f"perpflow_test_{uuid.uuid4().hex[:12]}"
    try:
        conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(f"PostgreSQL does not answer at {PG_ADMIN_DSN}: {exc}")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def _drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@asynccontextmanager
async def scratch_database(dialect: str, tmp_path: Path, stem: str = "perpflow"):
    """A URL of a new, empty database of ``dialect`` ('sqlite': a file ``<stem>.sqlite`` under
    ``tmp_path``; 'postgresql': a fresh database on the test server, dropped afterwards)."""
    if dialect == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / f'{stem}.sqlite'}"
        return
    name = await _create_pg_database()
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        await _drop_pg_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
async def blank_database_url(request, tmp_path):
    """A URL of an empty, real database of each dialect (no schema), removed afterwards."""
    async with scratch_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def database_url(blank_database_url):
    """A URL of a real database of each dialect, migrated to the newest schema revision."""
    engine = create_engine(blank_database_url)
    await init_schema(engine)
    await engine.dispose()
    return blank_database_url


@pytest.fixture
async def engine(database_url):
    """An AsyncEngine on ``database_url``, disposed afterwards."""
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()
