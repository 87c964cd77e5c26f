"""Realized funding history: paging ccxt ``fetch_funding_rate_history`` over a time window.

Kept apart from the client boundary (``perpflow.exchanges``) because paging is where a venue's
quirks (page caps, ordering, ignored bounds) decide whether settlements are lost.
"""

from __future__ import annotations

from typing import Any

from perpflow.exchanges import call, capability, exchange_client, with_markets
from perpflow.settings import ExchangeConfig


async def fetch_funding_history(
    venue: ExchangeConfig,
    markets: dict[str, dict[str, Any]],
    symbol: str,
    since_ms: int,
    until_ms: int,
    interval_ms: int,
) -> list[dict[str, Any]]:
    """Fetch every realized funding settlement of ``symbol`` in ``[since_ms, until_ms]``.

    Pages forward with ccxt ``fetch_funding_rate_history`` in windows of
    ``history_page_limit * interval_ms``, so a window never holds more settlements than one page;
    a full page moves the cursor past its newest row instead. Returns ccxt funding-rate-history
    dicts (``fundingRate`` as a fraction per interval, ``timestamp`` = settlement time in UTC ms),
    in the order the pages gave them, without repeated settlement times (rows without a
    time are kept for quarantine). Raises ExchangeError; ValueError for a non-positive interval.
    """
    if interval_ms <= 0:
        raise ValueError(f"interval_ms: must be positive, got {interval_ms!r}")
    cap = capability(venue.id)
    window = cap.history_page_limit * interval_ms
    rows: list[dict[str, Any]] = []
    seen: set[int] = set()
    async with exchange_client(venue) as client:
        with_markets(client, markets)
        cursor = since_ms
        while cursor <= until_ms:
            upper = min(cursor + window - 1, until_ms)
            params = {cap.history_until_param: upper + 1 if cap.history_until_exclusive else upper}
            page = await call(
                venue.label,
                "fetch_funding_rate_history",
                client.fetch_funding_rate_history,
                symbol,
                cursor,
                cap.history_page_limit,
                params,
            )
            stamps = [row["timestamp"] for row in page if isinstance(row.get("timestamp"), int)]
            for row in page:
                stamp = row.get("timestamp")
                if stamp not in seen:
                    rows.append(row)
                    if isinstance(stamp, int):
                        seen.add(stamp)
            full = len(page) >= cap.history_page_limit and stamps
            cursor = max(stamps) + 1 if full else upper + 1
    return rows
