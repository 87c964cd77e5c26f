"""Configuration: pydantic-settings, read from ``PERPFLOW_*`` environment variables.

Defaults need no setup: an embedded SQLite file under ``./data`` and the three reference venues
(``binanceusdm``, ``bybit``, ``okx``). Every value is validated when the settings are built, so a
bad value fails at start with an error that names the field and the value.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import ccxt
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

SUPPORTED_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///data/perpflow.sqlite"


def check_database_url(url: str) -> str:
    """Return ``url`` when it is a SQLAlchemy URL for a supported async driver.

    Raises ``ValueError`` naming the value (with any password masked) otherwise.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(f"database_url: not a SQLAlchemy URL: {_mask_url(url)!r}") from None
    if parsed.drivername not in SUPPORTED_DRIVERS:
        raise ValueError(
            f"database_url: driver {parsed.drivername!r} is not supported; "
            f"use one of {', '.join(SUPPORTED_DRIVERS)}"
        )
    if parsed.drivername.startswith("sqlite") and not parsed.database:
        raise ValueError("database_url: a SQLite URL needs a file path (in-memory is not durable)")
    return url


def _mask_url(url: str) -> str:
    """``url`` with the password part between ``:`` and ``@`` replaced by ``***``."""
    head, sep, tail = url.rpartition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, userinfo = head.partition("://")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{tail}"


class ExchangeConfig(BaseModel):
    """One venue to collect from.

    ``id`` is the ccxt exchange id (``binanceusdm``, ``bybit``, ``okx``, ...); ``name`` is the label
    stored in the ``exchange`` column (defaults to ``id``; set it to run two accounts or mirrors of
    one ccxt id side by side). ``symbols`` are fnmatch patterns on ccxt unified symbols
    (``BTC/USDT:USDT``, ``*/USDT:USDT``); empty means every linear perpetual. ``ccxt_config`` is
    merged into the ccxt constructor config (``options``, ``timeout`` in ms, ...), on top of the
    venue's capability defaults. ``api_url`` points every REST base URL of the venue at a proxy,
    testnet mirror or the local emulator (see ``perpflow.exchanges.rewrite_api_urls``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str | None = None
    enabled: bool = True
    symbols: tuple[str, ...] = ()
    ccxt_config: dict[str, Any] = Field(default_factory=dict)
    api_url: str | None = None
    api_key: SecretStr | None = None
    secret: SecretStr | None = None

    @field_validator("id")
    @classmethod
    def _known_ccxt_id(cls, value: str) -> str:
        if value not in ccxt.exchanges:
            raise ValueError(f"id: unknown ccxt exchange id {value!r}")
        return value

    @field_validator("api_url")
    @classmethod
    def _absolute_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"api_url: expected an absolute http(s) URL, got {value!r}")
        return value

    @property
    def label(self) -> str:
        """The value stored in the ``exchange`` column for this venue."""
        return self.name or self.id

    def __hash__(self) -> int:  # dict fields make the frozen model unhashable by default
        return hash(self.model_dump_json())


def default_exchanges() -> list[ExchangeConfig]:
    """The three reference venues, all symbols, public endpoints."""
    return [ExchangeConfig(id=venue) for venue in ("binanceusdm", "bybit", "okx")]


class Settings(BaseSettings):
    """Process-wide settings (env prefix ``PERPFLOW_``; nested lists/dicts as JSON).

    Units: intervals and delays in seconds, lookback in days.
    """

    model_config = SettingsConfigDict(env_prefix="PERPFLOW_", extra="forbid")

    database_url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)
    exchanges: list[ExchangeConfig] = Field(default_factory=default_exchanges)
    funding_history_lookback_days: float = Field(7.0, gt=0)
    exchange_retries: int = Field(4, ge=0, description="retries of a transient exchange failure")
    retry_backoff_seconds: float = Field(
        1.0, gt=0, description="first retry delay; doubles per retry, with jitter"
    )
    per_symbol_max: int = Field(
        3, ge=0, description="use single-symbol endpoints when a venue has at most this many symbols"
    )
    max_abs_funding_rate: float = Field(
        0.05, gt=0, description="|fundingRate| above this (fraction per interval) is quarantined"
    )
    # Scale-out: the venue fan-out of the collection flows on a Dask cluster.
    dask_address: str | None = Field(
        None,
        description="run the exchange tasks on Dask: 'local' (a new local cluster per flow run) "
        "or a scheduler address such as tcp://10.0.0.5:8786; unset: in the flow's process",
    )
    dask_workers: int = Field(2, gt=0, description="worker processes of a 'local' Dask cluster")

    @field_validator("database_url")
    @classmethod
    def _supported_url(cls, value: SecretStr) -> SecretStr:
        check_database_url(value.get_secret_value())
        return value

    @cached_property
    def enabled_exchanges(self) -> list[ExchangeConfig]:
        """The configured venues with ``enabled=True``, in order."""
        return [venue for venue in self.exchanges if venue.enabled]


class ConfigError(ValueError):
    """Invalid configuration: one line per bad field, each naming the field and the value given
    (database URLs with their password masked, credentials never shown)."""


SECRET_FIELDS = {"api_key", "secret"}


def _shown(loc: tuple, value: Any) -> str:
    if SECRET_FIELDS & {str(part) for part in loc}:
        return "'**********'"
    if "database_url" in loc and isinstance(value, str):
        return repr(_mask_url(value))
    return repr(value)


def load_settings(**overrides: Any) -> Settings:
    """``Settings`` from the environment (and ``overrides``), validated.

    Raises ``ConfigError`` naming every bad field and its value, e.g.
    ``exchanges.0.id = 'nope': Value error, id: unknown ccxt exchange id 'nope'``.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [
            f"{'.'.join(map(str, err['loc']))} = {_shown(err['loc'], err.get('input'))}: {err['msg']}"
            for err in exc.errors(include_url=False)
        ]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
