"""Data-quality tasks: load a window into DataFrames, validate it with great-expectations.

This module imports great-expectations (through ``perpflow.quality``); only the
check-data-quality flow imports it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

from perpflow import store
from perpflow.quality import (
    QualityWindow,
    SuiteRun,
    Thresholds,
    WindowData,
    load_frames,
    suites,
    validate,
)


@task(
    name="load-quality-window",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[1, 5],
    timeout_seconds=900,
)
async def load_quality_window(url: SecretStr, window: QualityWindow) -> WindowData:
    """The window's rows as DataFrames, its coverage and continuity frames and gaps."""
    async with store.run_engine(url.get_secret_value()) as engine:
        return await load_frames(engine, window)


@task(name="validate-quality-window", cache_policy=NO_CACHE, timeout_seconds=1800)
async def validate_quality_window(
    data: WindowData,
    thresholds: Thresholds,
    directory: Path,
    run_name: str,
    examples: int,
    on_suite_done: Callable[[str], Awaitable[None]],
) -> SuiteRun:
    """Run every suite over ``data`` in the GX context under ``directory`` (in a worker thread:
    GX is blocking) and build the Data Docs; ``on_suite_done(name)`` is awaited per suite."""
    loop = asyncio.get_running_loop()

    def done(name: str) -> None:
        asyncio.run_coroutine_threadsafe(on_suite_done(name), loop).result()

    return await asyncio.to_thread(
        validate, data.frames, suites(thresholds), directory, run_name, examples, done
    )
