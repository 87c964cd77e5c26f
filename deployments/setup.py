"""Prepare a Prefect server for perpflow's deployments; idempotent (creates only what is absent).

``python -m deployments.setup`` (against ``PREFECT_API_URL``):

1. the process work pool(s) named in ``prefect.yaml``;
2. the block types of ``blocks/`` (``perpflow-exchange``, ``perpflow-market-database``);
3. default blocks from the environment (``PERPFLOW_*``) where no block of that name exists: one
   ``perpflow-exchange`` per configured venue, named by its label, ``market-data`` and the
   ``perpflow-market-database`` blocks named in ``prefect.yaml``'s parameters: one per job role
   (``market-data-collector``, ``-reader``, ``-maintainer``) from
   ``PERPFLOW_<ROLE>_DATABASE_URL``, else ``PERPFLOW_DATABASE_URL`` (URL, keys and secrets
   stored as secret fields);
4. per venue, a global concurrency limit ``exchange-requests:<venue>`` used as a rate limit: every
   request to the venue takes a slot, slots decay at the venue's request budget per second
   (ccxt's ``rateLimit``, see ``perpflow.exchanges.requests_per_second``), so all workers together
   keep to it.

Existing objects are left as they are (edit them in the UI or with the ``prefect`` CLI); each line
printed says what was created or found.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, WorkPoolCreate
from prefect.exceptions import ObjectNotFound
from prefect.workers.process import ProcessWorker
from pydantic import SecretStr

from blocks import ExchangeBlock, MarketDatabase
from deployments.automations import ensure_automations
from deployments.steps import PREFECT_YAML
from perpflow.exchanges import requests_per_second
from perpflow.settings import ExchangeConfig, Settings, load_settings
from tasks.exchange import rate_limit_name

# The database block of each job role (sql/roles.sql) and the setting giving its URL; prefect.yaml
# gives each deployment the least of them it needs. ``market-data`` (the single block of a setup
# without roles) is always made from ``PERPFLOW_DATABASE_URL``.
DEFAULT_DATABASE_BLOCK = "market-data"
ROLE_BLOCKS = {
    "market-data-collector": "collector_database_url",
    "market-data-reader": "reader_database_url",
    "market-data-maintainer": "maintainer_database_url",
}

Step = Callable[[PrefectClient, Settings, dict[str, Any]], Awaitable[list[str]]]


def _deployment_values(spec: dict[str, Any], *path: str) -> list[Any]:
    """Distinct values at ``path`` (e.g. ``work_pool``, ``name``) over the deployments of
    ``prefect.yaml``, in order of first use."""
    values: list[Any] = []
    for item in spec.get("deployments") or []:
        value: Any = item
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None and value not in values:
            values.append(value)
    return values


async def ensure_work_pools(client: PrefectClient, settings: Settings, spec: dict) -> list[str]:
    """Create the process work pools the deployments name, when absent."""
    lines = []
    for name in _deployment_values(spec, "work_pool", "name"):
        try:
            pool = await client.read_work_pool(name)
            lines.append(f"work pool {name!r} ({pool.type}): exists")
        except ObjectNotFound:
            template = ProcessWorker.get_default_base_job_template()
            await client.create_work_pool(
                WorkPoolCreate(name=name, type="process", base_job_template=template)
            )
            lines.append(f"work pool {name!r} (process): created")
    return lines


async def ensure_block_types(client: PrefectClient, settings: Settings, spec: dict) -> list[str]:
    """Register (or refresh) the block types and schemas of ``blocks/``."""
    for block_type in (ExchangeBlock, MarketDatabase):
        await block_type.aregister_type_and_schema(client=client)
    return ["block types perpflow-exchange, perpflow-market-database: registered"]


async def _ensure_block(
    client: PrefectClient, block_type, name: str, make: Callable[[], Any]
) -> str:
    # Only a block that is not there is created: one that exists is never overwritten, even when
    # its stored fields no longer validate (loading it would fail; reading the document does not).
    slug = block_type.get_block_type_slug()
    try:
        await client.read_block_document_by_name(name, slug, include_secrets=False)
        return f"block {slug}/{name}: exists"
    except ObjectNotFound:
        await make().asave(name)
        return f"block {slug}/{name}: created from the environment"


def _exchange_block(venue: ExchangeConfig) -> ExchangeBlock:
    return ExchangeBlock.from_venue(venue)


async def ensure_blocks(client: PrefectClient, settings: Settings, spec: dict) -> list[str]:
    """Create a ``perpflow-exchange`` block per configured venue and the
    ``perpflow-market-database`` block(s) the deployments name, from the settings, when absent."""
    lines = [
        await _ensure_block(
            client, ExchangeBlock, venue.label, lambda venue=venue: _exchange_block(venue)
        )
        for venue in settings.exchanges
    ]
    named = _deployment_values(spec, "parameters", "database")
    for name in dict.fromkeys([DEFAULT_DATABASE_BLOCK, *named]):
        url = database_url_for(settings, name)
        lines.append(
            await _ensure_block(
                client, MarketDatabase, name, lambda url=url: MarketDatabase(url=url)
            )
        )
    return lines


def database_url_for(settings: Settings, block: str) -> SecretStr:
    """The URL of the ``perpflow-market-database`` block named ``block``: a role's block
    (``ROLE_BLOCKS``) takes ``PERPFLOW_<ROLE>_DATABASE_URL``, falling back like any other block to
    ``PERPFLOW_DATABASE_URL`` (one database login for every job, as without roles)."""
    field = ROLE_BLOCKS.get(block)
    return (getattr(settings, field) if field else None) or settings.database_url


async def ensure_rate_limits(client: PrefectClient, settings: Settings, spec: dict) -> list[str]:
    """Create each configured venue's request rate limit, when absent: ``limit`` (the burst) =
    one second of budget, rounded up; ``slot_decay_per_second`` = the budget (requests/s)."""
    lines = []
    for venue in settings.exchanges:
        name = rate_limit_name(venue.label)
        try:
            limit = await client.read_global_concurrency_limit_by_name(name)
            lines.append(f"rate limit {name}: exists ({limit.slot_decay_per_second:g}/s)")
        except ObjectNotFound:
            budget = requests_per_second(venue)
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(
                    name=name, limit=max(1, math.ceil(budget)), slot_decay_per_second=budget
                )
            )
            lines.append(f"rate limit {name}: created ({budget:g} requests/s)")
    return lines


async def ensure_alerts(client: PrefectClient, settings: Settings, spec: dict) -> list[str]:
    """The alert automations (``deployments.automations.ensure_automations``: created or updated
    by name, never duplicated) when their notification block exists or
    ``PERPFLOW_ALERT_WEBHOOK_URL`` lets them create it; otherwise one line saying how to enable
    them (a setup without alerts is still a working setup)."""
    try:
        ids = await ensure_automations()
    except ValueError as exc:
        return [f"automations: not created: {exc}"]
    return [f"automation {name!r}: {automation_id}" for name, automation_id in ids.items()]


# The setup, in order.
STEPS: tuple[Step, ...] = (
    ensure_work_pools,
    ensure_block_types,
    ensure_blocks,
    ensure_rate_limits,
    ensure_alerts,
)


async def setup(prefect_yaml: Path = PREFECT_YAML) -> list[str]:
    """Run every step against the configured Prefect API; returns the report lines.

    Raises ``perpflow.settings.ConfigError`` for bad ``PERPFLOW_*`` values (naming them) and
    Prefect's HTTP errors when the server refuses a request."""
    settings = load_settings()
    spec = yaml.safe_load(prefect_yaml.read_text())
    lines: list[str] = []
    async with get_client() as client:
        for step in STEPS:
            lines += await step(client, settings, spec)
    return lines


def main() -> int:
    """Entry point; prints what was created or found."""
    for line in asyncio.run(setup()):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
