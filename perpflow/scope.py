"""A run's shared, closeable resources: one ccxt client per venue, one engine per database.

``async with RunScope():`` around a flow run's body makes the scope current (a context variable,
so the Prefect tasks awaited inside see it); ``borrow`` then hands out one instance per key and
event loop, and leaving the scope closes them all. Without a current scope, ``borrow`` makes a
private instance and closes it when the caller is done.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

R = TypeVar("R")


class RunScope:
    """Resources shared by the tasks of one flow run, closed when the run's body ends."""

    _current: contextvars.ContextVar[RunScope | None] = contextvars.ContextVar(
        "perpflow_run_scope", default=None
    )

    def __init__(self) -> None:
        self._items: dict[tuple[str, asyncio.AbstractEventLoop], tuple[Any, Callable]] = {}

    def get(self, key: str, make: Callable[[], R], close: Callable[[R], Awaitable[Any]]) -> R:
        """The instance for ``key`` on the running loop, made with ``make()`` on first use."""
        slot = (key, asyncio.get_running_loop())
        if slot not in self._items:
            self._items[slot] = (make(), close)
        return self._items[slot][0]

    async def __aenter__(self) -> RunScope:
        self._token = self._current.set(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._current.reset(self._token)
        items, self._items = list(self._items.values()), {}
        await asyncio.gather(*(close(item) for item, close in items), return_exceptions=True)


@asynccontextmanager
async def borrow(
    key: str, make: Callable[[], R], close: Callable[[R], Awaitable[Any]]
) -> AsyncIterator[R]:
    """The current run scope's instance for ``key``, or a private one closed on exit."""
    scope = RunScope._current.get()
    if scope is not None:
        yield scope.get(key, make, close)
        return
    item = make()
    try:
        yield item
    finally:
        await close(item)
