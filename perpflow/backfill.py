"""Watermark planning for realized funding history: which symbols are due, and from when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from perpflow.normalize import interval_ms


@dataclass(frozen=True)
class HistoryRequest:
    """Fetch ``symbol``'s settlements in ``[since_ms, until_ms]`` (UTC ms) with ``interval_ms``
    between settlements."""

    symbol: str
    since_ms: int
    until_ms: int
    interval_ms: int


def plan_history(
    symbols: list[str],
    watermarks: dict[str, tuple[datetime | None, float | None]],
    now_ms: int,
    lookback_ms: int,
    default_interval_hours: float = 8.0,
) -> list[HistoryRequest]:
    """The history requests one sweep makes for ``symbols``.

    ``watermarks`` is ``{symbol: (newest stored settlement, interval hours)}`` (see
    ``perpflow.store.funding_watermarks``). A symbol without stored history is backfilled from
    ``now_ms - lookback_ms``; one with history is due only once a settlement may have happened
    after its newest stored one (newest + interval <= now), and is then fetched from just after it.
    """
    plan = []
    for symbol in symbols:
        newest, hours = watermarks.get(symbol, (None, None))
        step = interval_ms(hours, default_interval_hours)
        if newest is None:
            plan.append(HistoryRequest(symbol, now_ms - lookback_ms, now_ms, step))
            continue
        newest_ms = int(newest.timestamp() * 1000)
        if newest_ms + step <= now_ms:
            plan.append(HistoryRequest(symbol, newest_ms + 1, now_ms, step))
    return plan
