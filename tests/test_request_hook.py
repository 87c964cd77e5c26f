"""The per-request hook of ``perpflow.exchanges``: every HTTP request (history pages included)
awaits it, through the run's shared ccxt client, and only where it is set."""

from __future__ import annotations

from perpflow import exchanges, history, snapshots
from perpflow.emulator import EmulatorServer, GeneratedVenue
from perpflow.scope import RunScope
from perpflow.settings import ExchangeConfig

HOUR_MS = 3_600_000


async def test_every_request_awaits_the_hook_of_its_caller():
    with EmulatorServer([GeneratedVenue("okx", symbols=3, seed=3)]).running_in_thread() as server:
        venue = ExchangeConfig(id="okx", api_url=server.venue_base_url("okx"),
                               ccxt_config={"enableRateLimit": False})
        calls: list[str] = []

        async def hook():
            calls.append("request")

        async with RunScope():
            markets = await exchanges.load_perpetuals(venue)  # no hook: not counted
            unhooked = len(server.requests.records("okx"))
            symbol = next(iter(markets))
            now = exchanges.now_ms()
            with exchanges.before_each_request(hook):
                rows = (await history.fetch_funding_history(
                    venue, markets, symbol, now - 60 * 24 * HOUR_MS, now
                )).rows
            after = len(server.requests.records("okx"))
            await snapshots.fetch_snapshots(venue, "tickers", markets, 0)  # hook gone again
        pages = after - unhooked
    assert rows and pages > 1  # 60 days of 8 h settlements: more than one 100-row page
    assert len(calls) == pages
    assert len(server.requests.records("okx")) > after
