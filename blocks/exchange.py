"""The ``perpflow-exchange`` block: one venue's configuration and optional credentials."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import Field, SecretStr


class ExchangeBlock(Block):
    """One venue to collect from, editable in the Prefect UI.

    ``exchange_id`` is the ccxt id (``binanceusdm``, ``bybit``, ``okx``, ...), ``name`` the label
    stored in the ``exchange`` column (defaults to the id), ``symbols`` fnmatch patterns on ccxt
    unified symbols (empty = every perpetual of ``contract_types``: ``linear``, ``inverse``),
    ``datasets`` the datasets collected (empty = every one the venue offers), ``ccxt_config`` extra ccxt constructor
    config (``options``, ``timeout`` in ms, ...), ``api_url`` an API base-URL override (proxy,
    testnet mirror, the local emulator). ``api_key``/``secret`` are stored encrypted and never
    shown. Values are validated when a flow loads the block (unknown ccxt id, malformed URL).
    """

    _block_type_name = "perpflow Exchange"
    _block_type_slug = "perpflow-exchange"
    _description = "A ccxt venue for perpflow's collectors: id, symbols, options, URL override, keys."

    exchange_id: str = Field(description="ccxt exchange id, e.g. binanceusdm, bybit, okx")
    name: str | None = Field(None, description="label stored in the exchange column")
    enabled: bool = True
    symbols: list[str] = Field(default_factory=list, description="fnmatch patterns on symbols")
    contract_types: list[str] = Field(
        default_factory=lambda: ["linear", "inverse"], description="linear and/or inverse"
    )
    datasets: list[str] = Field(
        default_factory=list,
        description="tickers, funding_rates, funding_history; empty: all the venue offers",
    )
    ccxt_config: dict[str, Any] = Field(default_factory=dict, description="ccxt constructor config")
    api_url: str | None = Field(None, description="API base-URL override")
    api_key: SecretStr | None = None
    secret: SecretStr | None = None

    def venue_fields(self) -> dict[str, Any]:
        """The block's values under the field names of ``perpflow.settings.ExchangeConfig``."""
        return {
            "id": self.exchange_id,
            "name": self.name,
            "enabled": self.enabled,
            "symbols": tuple(self.symbols),
            "contract_types": tuple(self.contract_types),
            "datasets": tuple(self.datasets) or None,
            "ccxt_config": self.ccxt_config,
            "api_url": self.api_url,
            "api_key": self.api_key,
            "secret": self.secret,
        }
