"""Venue behaviours that lose data, switched on per generated venue (``GeneratedVenue(quirks=)``).

Every field defaults to "no quirk", so ``Quirks()`` is the plain venue. Instruments are named by
the venue's own id (``"BTCUSDT"``, ``"BTC-USDT-SWAP"``), by ccxt's unified symbol
(``"BTC/USDT:USDT"``) or by position in ``SyntheticMarket.instruments`` (0 is BTC). Which format
realises which quirk is the formats' business (``GeneratedFormat.unsupported``); asking a format
for a quirk its real venue's API cannot show raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

InstrumentKey = str | int


@dataclass(frozen=True)
class Quirks:
    """What a generated venue does differently from the plain venue.

    Funding history (the per-symbol history endpoint):

    - ``history_newest_first``: rows newest first (Bybit and OKX always are).
    - ``history_ignores_since``: the lower bound (``startTime``, OKX ``before``) is ignored: the
      page holds the newest settlements up to the upper bound (or now), whatever the start.
    - ``history_page_cap``: at most this many rows per page whatever ``limit`` asks (``None``:
      the venue's own cap; e.g. 25).
    - ``history_ignores_until``: the upper bound (``endTime``, OKX ``after``) is ignored: the page
      runs from the lower bound forward (the newest rows when there is no lower bound).
    - ``no_funding_history``: the history endpoint is not served (the venue's not-found answer).

    Bulk endpoints:

    - ``no_bulk_funding``: the all-symbols form of the current-funding endpoint answers the
      venue's error (only per-symbol calls work).
    - ``single_symbol_tickers``: the all-symbols tickers form answers the venue's bad-request
      error "cannot contain more than 1 symbol"; the single-symbol form works.

    Instruments and values:

    - ``stale_instruments`` / ``stale_fraction``: these instruments (and a deterministic fraction
      ``0 <= f < 1`` of all) trade only once every ``trade_every_min`` minutes; their ticker row
      is as of the last trade and their ticker and funding rows carry the last trade's time,
      while mark, index and funding rate keep moving.
    - ``contract_size``: every linear swap's contract size (base currency per contract; the
      ticker volume is in contracts of it); ``None``: the format's own.
    - ``inverse``: list coin-settled inverse perpetuals (``BTC/USD:BTC``, ``ETH/USD:ETH``) with
      funding and funding history.
    - ``intervals``: ``(instrument, hours)`` pairs setting an instrument's funding interval from
      its listing; ``interval_changes``: ``(instrument, at_ms, hours)`` triples, the settlement at
      ``at_ms`` being the last on the old interval (see ``market.IntervalSchedule``).
    """

    history_newest_first: bool = False
    history_ignores_since: bool = False
    history_page_cap: int | None = None
    history_ignores_until: bool = False
    no_funding_history: bool = False
    no_bulk_funding: bool = False
    single_symbol_tickers: bool = False
    stale_instruments: tuple[InstrumentKey, ...] = ()
    stale_fraction: float = 0.0
    trade_every_min: int = 15
    contract_size: float | None = None
    inverse: bool = False
    intervals: tuple[tuple[InstrumentKey, int], ...] = ()
    interval_changes: tuple[tuple[InstrumentKey, int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.history_page_cap is not None and self.history_page_cap < 1:
            raise ValueError(f"history_page_cap: expected >= 1, got {self.history_page_cap!r}")
        if not 0.0 <= self.stale_fraction < 1.0:
            raise ValueError(f"stale_fraction: expected [0, 1), got {self.stale_fraction!r}")
        if self.trade_every_min < 1:
            raise ValueError(f"trade_every_min: expected >= 1, got {self.trade_every_min!r}")
        if self.contract_size is not None and not self.contract_size > 0:
            raise ValueError(f"contract_size: expected > 0, got {self.contract_size!r}")

    def active(self) -> list[str]:
        """Names of the fields that differ from the plain venue."""
        plain = Quirks()
        return [f.name for f in fields(self) if getattr(self, f.name) != getattr(plain, f.name)]

    @property
    def stale(self) -> bool:
        """True when some instruments trade only now and then."""
        return bool(self.stale_instruments) or self.stale_fraction > 0

    def to_json(self) -> dict[str, Any]:
        """The quirks as a JSON-able dict (tuples as lists), the inverse of ``from_json``."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Quirks:
        """Quirks from a JSON object with ``Quirks`` field names (lists for tuples; ``intervals``
        also as an ``{instrument: hours}`` object). Raises ``ValueError`` for an unknown name or a
        bad value."""
        names = {f.name for f in fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"quirks: unknown {sorted(unknown)}; expected some of {sorted(names)}")
        values = dict(data)
        if isinstance(values.get("intervals"), Mapping):
            values["intervals"] = list(values["intervals"].items())
        for name in ("stale_instruments", "intervals", "interval_changes"):
            if name in values:
                values[name] = tuple(
                    tuple(item) if isinstance(item, list | tuple) else item
                    for item in values[name]
                )
        try:
            return cls(**values)
        except TypeError as error:
            raise ValueError(f"quirks: {error}") from None
