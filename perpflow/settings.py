"""Configuration: pydantic-settings, read from a profile file and ``PERPFLOW_*`` variables.

Defaults need no setup: an embedded SQLite file under ``./data`` and the three reference venues
(``binanceusdm``, ``bybit``, ``okx``). A profile (``PERPFLOW_PROFILE=staging`` reads
``config/staging.toml`` under the working directory; ``PERPFLOW_CONFIG=/path/file.toml`` reads that
file) sets values over the defaults, and environment variables set values over the profile. Every
value is validated when the settings are built, so a bad value fails at start with an error that
names the field: the value is shown only for plain fields, never for a credential, an unknown field,
a JSON object or an unparsable URL (those say "value hidden").
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from perpflow.capabilities import lists_perpetuals

SUPPORTED_DRIVERS = ("sqlite+aiosqlite", "postgresql+asyncpg")
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///data/perpflow.sqlite"
DEFAULT_BENCH_DATABASE_URL = "sqlite+aiosqlite:///data/bench.sqlite"


def check_database_url(url: str) -> str:
    """Return ``url`` when it is a SQLAlchemy URL for a supported async driver.

    Raises ``ValueError`` naming the driver when it is not supported; an unparsable URL (a libpq
    ``key=value`` string, a URL without ``://``) is refused without its text, which may hold a
    password.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(
            "database_url: not a SQLAlchemy URL (its text is not shown: it may hold a password); "
            "expected driver://user:password@host:port/database"
        ) from None
    if parsed.drivername not in SUPPORTED_DRIVERS:
        raise ValueError(
            f"database_url: driver {parsed.drivername!r} is not supported; "
            f"use one of {', '.join(SUPPORTED_DRIVERS)}"
        )
    if parsed.drivername.startswith("sqlite") and not parsed.database:
        raise ValueError("database_url: a SQLite URL needs a file path (in-memory is not durable)")
    return url


def mask_url(url: str) -> str:
    """``url`` for display: the password and every query-string value replaced by ``***``; an
    unparsable URL is not shown at all (it may hold a password in any place)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return f"({HIDDEN_UNPARSABLE})"
    if parsed.query:
        parsed = parsed.set(query={key: "***" for key in parsed.query})
    return parsed.render_as_string(hide_password=True)


# ExchangeConfig credential field -> ccxt constructor key: every key of ccxt's
# ``Exchange.requiredCredentials`` (tests/test_secrets.py checks the two lists agree).
CREDENTIALS: dict[str, str] = {
    "api_key": "apiKey",
    "secret": "secret",
    "uid": "uid",
    "account_id": "accountId",
    "login": "login",
    "password": "password",
    "twofa": "twofa",
    "private_key": "privateKey",
    "wallet_address": "walletAddress",
    "token": "token",
}
HIDDEN_SECRET = "value hidden: a secret field"
HIDDEN_UNKNOWN = "value hidden: unknown field"
HIDDEN_OBJECT = "value hidden: a JSON object or list"
HIDDEN_UNPARSABLE = "value hidden: not a parsable URL"


class ExchangeConfig(BaseModel):
    """One venue to collect from.

    ``id`` is the ccxt exchange id (``binanceusdm``, ``bybit``, ``okx``, ...); ``name`` is the label
    stored in the ``exchange`` column (defaults to ``id``; set it to run two accounts or mirrors of
    one ccxt id side by side). ``symbols`` are fnmatch patterns on ccxt unified symbols
    (``BTC/USDT:USDT``, ``*/USDT:USDT``); empty means every perpetual of ``contract_types``
    (``linear``: settled in the quote currency, USDT/USDC...; ``inverse``: coin-settled; a symbol
    named exactly is taken whatever its type). ``datasets`` lists the datasets collected from the
    venue (default: every one the venue supports through ccxt). ``ccxt_config`` is
    merged into the ccxt constructor config (``options``, ``timeout`` in ms, ...), on top of the
    venue's capability defaults; it must not hold credentials (the blocks API returns it in clear):
    those are the ``SecretStr`` fields of ``CREDENTIALS`` (``api_key``, ``secret``, ``password``
    for okx's passphrase, ``uid``, ``private_key``, ``wallet_address``, ...), handed to ccxt under
    its own names (``apiKey``, ``privateKey``, ...). ``api_url`` points every REST base URL of the
    venue at a proxy, testnet mirror or the local emulator (see
    ``perpflow.exchanges.rewrite_api_urls``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    id: str
    name: str | None = None
    enabled: bool = True
    symbols: tuple[str, ...] = ()
    contract_types: tuple[Literal["linear", "inverse"], ...] = ("linear", "inverse")
    datasets: tuple[Literal["tickers", "funding_rates", "funding_history"], ...] | None = None
    ccxt_config: dict[str, Any] = Field(default_factory=dict)
    api_url: str | None = None
    api_key: SecretStr | None = None
    secret: SecretStr | None = None
    uid: SecretStr | None = None
    account_id: SecretStr | None = None
    login: SecretStr | None = None
    password: SecretStr | None = None
    twofa: SecretStr | None = None
    private_key: SecretStr | None = None
    wallet_address: SecretStr | None = None
    token: SecretStr | None = None

    @field_validator("ccxt_config")
    @classmethod
    def _no_credentials(cls, value: dict[str, Any]) -> dict[str, Any]:
        names = {**{name.lower(): field for field, name in CREDENTIALS.items()},
                 **{field: field for field in CREDENTIALS}}
        for key in value:
            if field := names.get(str(key).lower()):
                raise ValueError(
                    f"ccxt_config.{key}: a credential ({HIDDEN_SECRET}); set the venue's "
                    f"secret field {field!r} instead"
                )
        return value

    @field_validator("id")
    @classmethod
    def _known_ccxt_id(cls, value: str) -> str:
        if not lists_perpetuals(value):
            raise ValueError(f"id: ccxt exchange {value!r} lists no perpetual swaps")
        return value

    @field_validator("contract_types", "datasets")
    @classmethod
    def _not_empty(cls, value: tuple[str, ...] | None, info) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError(f"{info.field_name}: empty; leave it out for the default")
        return value

    def wants(self, dataset: str) -> bool:
        """True when ``dataset`` is to be collected from this venue (``datasets`` unset: all)."""
        return self.datasets is None or dataset in self.datasets

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

    model_config = SettingsConfigDict(
        env_prefix="PERPFLOW_", extra="forbid", hide_input_in_errors=True
    )

    database_url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)
    # One database role per job (sql/roles.sql): deployments.setup makes the
    # market-data-<role> blocks from these, each defaulting to database_url when unset.
    collector_database_url: SecretStr | None = None
    reader_database_url: SecretStr | None = None
    maintainer_database_url: SecretStr | None = None
    exchanges: list[ExchangeConfig] = Field(default_factory=default_exchanges)
    funding_history_lookback_days: float = Field(7.0, gt=0)
    ticker_interval_seconds: int = Field(
        60, gt=0, description="collect-tickers cadence that report-health's freshness expects "
        "(the schedule itself is in prefect.yaml)"
    )
    funding_interval_seconds: int = Field(
        300, gt=0, description="sweep-funding-rates cadence that report-health's freshness expects"
    )
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

    # maintain-database: statement bounds and decision thresholds (README "Database maintenance")
    maintenance_lock_timeout_seconds: float = Field(
        5.0, gt=0, description="longest wait of a maintenance statement for a lock"
    )
    maintenance_statement_timeout_seconds: float = Field(
        900.0, gt=0, description="longest run of one maintenance statement"
    )
    maintenance_dead_tuple_fraction: float = Field(
        0.1, ge=0, le=1, description="VACUUM a table whose dead tuples reach this share"
    )
    maintenance_dead_tuple_min: int = Field(1000, ge=0, description="... and at least this many")
    maintenance_index_bloat_fraction: float = Field(
        0.3, ge=0, le=1, description="REINDEX CONCURRENTLY an index with this estimated bloat"
    )
    maintenance_index_min_bytes: int = Field(
        8 * 1024 * 1024, ge=0, description="... when it is at least this large"
    )
    maintenance_sqlite_free_fraction: float = Field(
        0.2, ge=0, le=1, description="VACUUM SQLite when this share of the file is free pages"
    )
    maintenance_sqlite_delete_batch: int = Field(5000, gt=0, description="rows per retention DELETE")
    retention_days: dict[str, int] = Field(
        default_factory=lambda: {"tickers": 90, "funding_rates": 365},
        description="days kept per table (tickers, funding_rates); absent: kept forever",
    )
    partitions_ahead_days: int = Field(7, ge=0, description="daily partitions created ahead")

    @field_validator("retention_days")
    @classmethod
    def _retained_tables(cls, value: dict[str, int]) -> dict[str, int]:
        for table, days in value.items():
            if table not in ("tickers", "funding_rates"):
                raise ValueError(f"retention_days: table {table!r} has no retention (tickers, funding_rates)")
            if days < 1:
                raise ValueError(f"retention_days.{table}: {days!r} days; expected at least 1")
        return value

    # Monitoring: data quality (check-data-quality), health (report-health), alerts.
    quality_dir: str = Field("data/gx", description="great-expectations file context and Data Docs")
    quality_window_minutes: int = Field(60, gt=0, description="default data-quality window")
    quality_mark_index_band: float = Field(
        0.02, gt=0, description="max |mark / index - 1| (fraction)"
    )
    quality_max_abs_funding_rate: float = Field(
        0.03, gt=0, description="max |funding rate| (fraction per interval) in the reports"
    )
    quality_clock_skew_seconds: float = Field(
        5.0, ge=0, description="how far a row's time may lead its collection time"
    )
    quality_max_age_seconds: float = Field(
        120.0, gt=0, description="how far a ticker's/rate's time may trail its collection time"
    )
    quality_min_coverage: float = Field(
        0.95, gt=0, le=1, description="symbols with rows / active instruments, per venue"
    )
    quality_examples: int = Field(5, ge=0, description="unexpected examples kept per expectation")
    health_disk_path: str = Field("data", description="file system whose disk use is reported")
    health_stale_warn_factor: float = Field(2.0, gt=0, description="age / schedule for WARN")
    health_stale_crit_factor: float = Field(5.0, gt=0, description="age / schedule for CRIT")
    health_failure_rate_warn: float = Field(0.05, ge=0, le=1, description="failed / runs, 24 h")
    health_failure_rate_crit: float = Field(0.25, ge=0, le=1, description="failed / runs, 24 h")
    health_late_runs_warn: int = Field(1, ge=1, description="late runs in 24 h for WARN")
    health_late_seconds: float = Field(60.0, gt=0, description="start this late counts as late")
    health_percent_warn: float = Field(85.0, gt=0, le=100, description="CPU/memory/disk % for WARN")
    health_percent_crit: float = Field(95.0, gt=0, le=100, description="CPU/memory/disk % for CRIT")
    health_db_rtt_warn_ms: float = Field(200.0, gt=0, description="database round trip for WARN")
    health_db_rtt_crit_ms: float = Field(2000.0, gt=0, description="database round trip for CRIT")
    health_cache_hit_warn: float = Field(0.95, ge=0, le=1, description="PostgreSQL cache hit ratio")
    health_long_query_seconds: float = Field(300.0, gt=0, description="a longer query is reported")
    alert_block: str = Field(
        "custom-webhook/perpflow-alerts", description="notification block, as type-slug/name"
    )
    alert_webhook_url: SecretStr | None = Field(
        None, description="creates the default webhook block when it does not exist"
    )
    alert_stale_minutes: int = Field(
        15, gt=0, description="alert when a collector has not completed for this long"
    )

    # run-benchmarks
    bench_database_url: SecretStr = Field(
        SecretStr(DEFAULT_BENCH_DATABASE_URL),
        description="scratch database the benchmarks fill and empty (never the market database)",
    )
    bench_regression_margin: float = Field(
        0.25, gt=0, lt=1, description="a figure worse than its recent median by more than this fraction is flagged"
    )

    @field_validator(
        "database_url", "bench_database_url", "collector_database_url", "reader_database_url",
        "maintainer_database_url",
    )
    @classmethod
    def _supported_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_database_url(value.get_secret_value())
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Highest first: keyword arguments, ``PERPFLOW_*`` variables, the profile file."""
        profile = profile_file()
        sources = (init_settings, env_settings)
        return sources + ((_profile_source(profile.path),) if profile else ())

    @cached_property
    def enabled_exchanges(self) -> list[ExchangeConfig]:
        """The configured venues with ``enabled=True``, in order."""
        return [venue for venue in self.exchanges if venue.enabled]

    # Liveness: per-venue circuit breaker (perpflow.circuit), database timeouts, stalled runs.
    circuit_failures: int = Field(
        3, ge=1, description="consecutive failed steps of a venue that open its circuit"
    )
    circuit_cooldown_seconds: float = Field(
        300.0, gt=0, description="an open circuit skips its venue this long before a probe"
    )
    database_connect_timeout_seconds: float = Field(
        10.0, gt=0, description="longest wait to open a database connection"
    )
    database_statement_timeout_seconds: float = Field(
        300.0, gt=0, description="longest run of one database statement (maintenance has its own)"
    )
    health_heartbeat_stale_seconds: float = Field(
        600.0, gt=0, description="a RUNNING flow run without a heartbeat for this long is flagged"
    )
    health_progress_stale_seconds: float = Field(
        1800.0, gt=0, description="a RUNNING flow run with no task-run change for this long is "
        "flagged as making no progress"
    )


class ConfigError(ValueError):
    """Invalid configuration: one line per bad field, each naming the field; the value given is
    shown only for plain fields (database URLs with their password masked, credentials, unknown
    fields, JSON objects and unparsable URLs never)."""


SECRET_FIELDS = {*CREDENTIALS, "alert_webhook_url"}
URL_FIELDS = {"database_url", "bench_database_url", "url"}
# PERPFLOW_* variables read outside ``Settings``: profile selection, and the test suite's server.
OTHER_VARIABLES = {"PERPFLOW_PROFILE", "PERPFLOW_CONFIG", "PERPFLOW_TEST_PG_DSN"}
PROFILE_DIR = Path("config")
_PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
log = logging.getLogger(__name__)


class Profile(BaseModel):
    """The profile file in force: ``name`` (``PERPFLOW_PROFILE``, or the file's stem when only
    ``PERPFLOW_CONFIG`` is set) and its ``path``."""

    name: str
    path: Path


def profile_file(environ: Mapping[str, str] | None = None) -> Profile | None:
    """The TOML file the settings read under the environment variables, or None (defaults and
    environment only).

    ``PERPFLOW_CONFIG`` (a file path) wins; else ``PERPFLOW_PROFILE=name`` reads
    ``config/<name>.toml`` under the working directory (the directory the flows run in, like the
    default ``data/`` directory). Raises ``ConfigError`` for a malformed profile name or a file that
    does not exist.
    """
    environ = os.environ if environ is None else environ
    name, path = environ.get("PERPFLOW_PROFILE"), environ.get("PERPFLOW_CONFIG")
    if not name and not path:
        return None
    if not path:
        if not _PROFILE_NAME.fullmatch(name):
            raise ConfigError(f"PERPFLOW_PROFILE = {name!r}: expected a name like dev, staging")
        path = str(PROFILE_DIR / f"{name}.toml")
    if not Path(path).is_file():
        where = f"PERPFLOW_PROFILE = {name!r}" if not environ.get("PERPFLOW_CONFIG") else (
            "PERPFLOW_CONFIG")
        raise ConfigError(f"{where}: profile file {path!r} does not exist")
    return Profile(name=name or Path(path).stem, path=Path(path))


def _profile_source(path: Path) -> TomlConfigSettingsSource:
    try:
        return TomlConfigSettingsSource(Settings, toml_file=path)
    except tomllib.TOMLDecodeError as exc:  # its text has the line and column, not the content
        raise ConfigError(f"profile file {str(path)!r}: not valid TOML: {exc}") from None


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """Names of ``PERPFLOW_*`` environment variables that no setting reads (misspelled or stale),
    sorted; the names only, never their values."""
    environ = os.environ if environ is None else environ
    known = {f"PERPFLOW_{field}".upper() for field in Settings.model_fields} | OTHER_VARIABLES
    return sorted(
        name
        for name in environ
        if name.upper().startswith("PERPFLOW_") and name.upper() not in known
    )


def value_sources(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Where each setting's effective value comes from: ``environment``, ``profile <name>`` or
    ``default`` (keyword overrides are not considered). Raises ``ConfigError`` as ``load_settings``
    for a missing or malformed profile file or an unparsable variable."""
    environ = os.environ if environ is None else environ
    profile = profile_file(environ)
    from_file = set(_profile_source(profile.path).toml_data) if profile else set()
    try:
        from_env = set(EnvSettingsSource(Settings, case_sensitive=False)())
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration:\n  {exc}") from None
    return {
        field: "environment" if field in from_env
        else f"profile {profile.name}" if field in from_file
        else "default"
        for field in Settings.model_fields
    }


def _shown(error: Mapping[str, Any]) -> str:
    """The value of one pydantic error for display: shown for plain fields, hidden otherwise."""
    loc, value = [str(part) for part in error["loc"]], error.get("input")
    if SECRET_FIELDS & set(loc):
        return f"({HIDDEN_SECRET})"
    if error["type"] == "extra_forbidden":
        return f"({HIDDEN_UNKNOWN})"
    if URL_FIELDS & set(loc) and isinstance(value, str):
        shown = mask_url(value)
        return shown if shown == f"({HIDDEN_UNPARSABLE})" else repr(shown)
    if not isinstance(value, (str, int, float, bool, type(None))):
        return f"({HIDDEN_OBJECT})"
    return repr(value)


def _config_error(exc: ValidationError, prefix: str = "") -> ConfigError:
    lines = [
        f"{prefix}{'.'.join(map(str, err['loc']))} = {_shown(err)}: {err['msg']}"
        for err in exc.errors(include_url=False)
    ]
    return ConfigError("invalid configuration:\n  " + "\n  ".join(lines))


def exchange_config(fields: Mapping[str, Any], where: str = "") -> ExchangeConfig:
    """``ExchangeConfig(**fields)``, validated; raises ``ConfigError`` with one line per bad
    field, prefixed by ``where`` (e.g. ``block okx: ``), values hidden as in ``load_settings``."""
    try:
        return ExchangeConfig(**fields)
    except ValidationError as exc:
        raise _config_error(exc, where) from None


def load_settings(**overrides: Any) -> Settings:
    """``Settings`` from the profile file, the environment and ``overrides`` (highest), validated.

    Logs a warning naming each unknown ``PERPFLOW_*`` variable (never its value). Raises
    ``ConfigError`` naming every bad field, e.g.
    ``exchanges.0.id = 'nope': Value error, id: ccxt exchange 'nope' lists no perpetual swaps`` or
    ``exchanges.0.apikey = (value hidden: unknown field): Extra inputs are not permitted``.
    """
    for name in unknown_variables():
        log.warning("unknown environment variable %s: no setting reads it (value not shown)", name)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise _config_error(exc) from None
    except SettingsError as exc:  # an unparsable JSON variable; its text names only the field
        raise ConfigError(f"invalid configuration:\n  {exc}") from None
