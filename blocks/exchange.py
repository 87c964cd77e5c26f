"""The ``perpflow-exchange`` block: one venue's configuration and optional credentials."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr

from perpflow.settings import CREDENTIALS, ExchangeConfig, exchange_config


class ExchangeBlock(Block):
    """One venue to collect from, editable in the Prefect UI.

    ``exchange_id`` is the ccxt id (``binanceusdm``, ``bybit``, ``okx``, ...), ``name`` the label
    stored in the ``exchange`` column (defaults to the id), ``symbols`` fnmatch patterns on ccxt
    unified symbols (empty = every perpetual of ``contract_types``: ``linear``, ``inverse``),
    ``datasets`` the datasets collected (empty = every one the venue offers), ``ccxt_config`` extra
    ccxt constructor config (``options``, ``timeout`` in ms, ...; never credentials: the blocks API
    returns it in clear), ``api_url`` an API base-URL override (proxy, testnet mirror, the local
    emulator). The credentials ``api_key``, ``secret``, ``password`` (okx's passphrase), ``uid``,
    ``account_id``, ``login``, ``twofa``, ``private_key``, ``wallet_address``, ``token`` (ccxt's
    ``requiredCredentials``, see ``perpflow.settings.CREDENTIALS``) are stored encrypted and never
    shown. Values are validated when a flow loads the block (``venue()``).
    """

    model_config = ConfigDict(hide_input_in_errors=True)

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
    ccxt_config: dict[str, Any] = Field(
        default_factory=dict, description="ccxt constructor config, without credentials"
    )
    api_url: str | None = Field(None, description="API base-URL override")
    api_key: SecretStr | None = None
    secret: SecretStr | None = None
    uid: SecretStr | None = None
    account_id: SecretStr | None = None
    login: SecretStr | None = None
    password: SecretStr | None = Field(None, description="ccxt password (okx: the passphrase)")
    twofa: SecretStr | None = None
    private_key: SecretStr | None = None
    wallet_address: SecretStr | None = None
    token: SecretStr | None = None

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
            **{field: getattr(self, field) for field in CREDENTIALS},
        }

    def venue(self) -> ExchangeConfig:
        """The block as a validated venue. Raises ``perpflow.settings.ConfigError`` naming each bad
        field (``block <name>: api_url = ...``), credential values never shown."""
        return exchange_config(self.venue_fields(), f"block {self._block_document_name}: ")

    @classmethod
    def from_venue(cls, venue: ExchangeConfig) -> ExchangeBlock:
        """A block holding ``venue`` (credentials included), e.g. to save from the settings."""
        return cls(
            exchange_id=venue.id,
            name=venue.name,
            enabled=venue.enabled,
            symbols=list(venue.symbols),
            contract_types=list(venue.contract_types),
            datasets=list(venue.datasets or ()),
            ccxt_config=venue.ccxt_config,
            api_url=venue.api_url,
            **{field: getattr(venue, field) for field in CREDENTIALS},
        )
