"""ccxt unified dicts -> typed rows for the store, with quarantine for rows that cannot be used.

Each function takes what one ccxt call returned for one venue and returns a ``Batch``: rows ready
for ``perpflow.store`` (dicts keyed by column name; prices in quote currency, funding rates as a
fraction per funding interval, timestamps as timezone-aware UTC datetimes) and quarantine records
(the payload with the reason it was refused). Nothing is dropped silently: every requested symbol
ends up as a row or a quarantine record.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

HOUR_MS = 3_600_000


@dataclass
class Batch:
    """Rows for one (venue, dataset) plus the ones refused.

    ``requested``: how many rows normalization accounted for (symbols asked for, or settlements
    received for history; the store adds one per ``failed`` symbol to the ledger's requested);
    ``rows``: normalized rows (column -> value); ``quarantine``: quarantine rows with ``reason``;
    ``failed``: ``{symbol: error}`` for the requested symbols the venue could not be asked for or
    did not answer (a per-symbol call that failed), so that the ledger can account for them;
    ``attempts``: runs of the fetch task that produced it (1 + retries used); ``batch_id``: this
    batch's identity (a random hex UUID made with it, kept through retries of its store, which is
    how a store retried after a commit whose acknowledgement was lost recognises its own ledger
    row).
    """

    exchange: str
    dataset: str
    requested: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    attempts: int = 1
    notes: list[str] = field(default_factory=list)
    batch_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def received(self) -> int:
        """Rows the venue returned for what was requested (normalized or quarantined)."""
        return len(self.rows) + len(self.quarantine)

    def refuse(self, payload: Any, reason: str, run_id: str | None, symbol: str | None) -> None:
        """Quarantine ``payload`` (any JSON-able value, e.g. a ccxt dict) with ``reason``."""
        self.quarantine.append(
            {
                "exchange": self.exchange,
                "dataset": self.dataset,
                "symbol": symbol if isinstance(symbol, str) else None,
                "payload": json.loads(json.dumps(payload, default=str)),
                "reason": reason,
                "run_id": run_id,
                "quarantined_at": datetime.now(UTC),
            }
        )


class RowError(ValueError):
    """A value in a venue payload that cannot be stored; the message names field and value."""


def ms_to_datetime(ms: int) -> datetime:
    """UTC milliseconds since the epoch -> timezone-aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _number(item: dict[str, Any], key: str, *, positive: bool = False) -> float | None:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RowError(f"{key}={value!r}: not a finite number")
    if positive and value <= 0:
        raise RowError(f"{key}={value!r}: a price must be positive")
    return float(value)


# The last word of a raw field's name that says it holds a number ccxt reads as a price, a rate
# or a volume (``lastPrice``, ``bid1Price``, ``markPx``, ``fundingRate``, ``best_bid``, ``volume``);
# a name ending in another word (``lastTickDirection``, ``markMethod``) is not checked.
NUMERIC_WORDS = frozenset({"price", "px", "rate", "bid", "ask", "last", "volume", "vol",
                           "turnover", "mark", "index"})
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
RAW_CHARS = 80


def _numeric_field(name: Any) -> bool:
    words = _WORD.findall(name) if isinstance(name, str) else []
    return bool(words) and words[-1].lower() in NUMERIC_WORDS


def _not_a_number(value: Any) -> str | None:
    """Why a raw payload value cannot be a number ccxt derived a price or rate from, or None:
    a boolean, an object, a list, or text that is no decimal number (empty text is absent)."""
    if isinstance(value, bool | dict | list):
        return f"a {type(value).__name__}, not a number"
    if isinstance(value, str) and value.strip():
        try:
            float(value)
        except ValueError:
            return "text that is no number"
    return None


def raw_defect(item: Mapping[str, Any]) -> str | None:
    """The first malformed value among the raw payload fields behind a ccxt item, as a
    quarantine reason, or None.

    ccxt reads prices and rates from the venue's row (kept as the item's ``info``) with
    ``safe_number``, which turns a boolean, an object or text that is no number into None (the
    field then looks merely absent, or is filled from elsewhere) rather than failing. So every
    top-level field of ``info`` whose name ends in a price, rate or volume word
    (``NUMERIC_WORDS``: ``lastPrice``, ``bid1Price``, ``fundingRate``, ``markPx``...) must be a
    number, numeric text, empty or null. Checked against the recorded payloads of binanceusdm,
    bybit, okx, kucoinfutures and dydx: no real row has another kind there."""
    info = item.get("info")
    if not isinstance(info, Mapping):
        return None
    for name, value in info.items():
        why = _numeric_field(name) and _not_a_number(value)
        if why:
            shown = json.dumps(value, default=str)
            shown = shown if len(shown) <= RAW_CHARS else shown[: RAW_CHARS - 3] + "..."
            return f"info.{name}={shown}: {why} (ccxt would derive a number or None from it)"
    return None


def _check_raw(item: Mapping[str, Any]) -> None:
    why = raw_defect(item)
    if why:
        raise RowError(why)


def _timestamp(item: dict[str, Any], key: str) -> int | None:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise RowError(f"{key}={value!r}: not a UTC millisecond timestamp")
    return value


_INTERVAL = re.compile(r"^(\d+(?:\.\d+)?)([mhd])$")
_INTERVAL_HOURS = {"m": 1 / 60, "h": 1.0, "d": 24.0}


def interval_hours(value: Any) -> float | None:
    """ccxt's funding ``interval`` string (``'8h'``, ``'60m'``, ``'1d'``) -> hours, else None."""
    match = _INTERVAL.match(value) if isinstance(value, str) else None
    return float(match[1]) * _INTERVAL_HOURS[match[2]] if match else None


def _stamp(item: dict[str, Any], received_ms: int) -> tuple[datetime, str]:
    """The exchange's timestamp when given, else the receipt time, and which one it is."""
    ts = _timestamp(item, "timestamp")
    return (ms_to_datetime(ts), "exchange") if ts is not None else (
        ms_to_datetime(received_ms),
        "received",
    )


def _normalize_each(
    batch: Batch,
    items: dict[str, Any],
    symbols: list[str],
    run_id: str | None,
    build: Any,
    unparsed: list[tuple[dict[str, Any], str | None, str]],
    received_ms: int,
) -> Batch:
    """Run ``build(symbol, item)`` for every requested symbol; quarantine what fails or is absent
    (``unparsed``: raw rows ccxt could not parse, as ``(row, symbol, reason)``)."""
    batch.requested = len(symbols)
    refused = set()
    for raw, symbol, reason in unparsed:
        batch.refuse(raw, reason, run_id, symbol)
        refused.add(symbol)
    for symbol in symbols:
        item = items.get(symbol)
        if symbol in refused:
            continue
        if item is None:
            # The receipt time makes each run's absence its own quarantine record (a refused
            # payload is held once, and this one would otherwise be the same every run).
            absent = {"symbol": symbol, "received_ms": received_ms}
            batch.refuse(absent, "no row for a requested symbol", run_id, symbol)
            continue
        try:
            if item.get("symbol") != symbol:
                raise RowError(f"symbol={item.get('symbol')!r}: expected {symbol!r}")
            _check_raw(item)
            batch.rows.append(build(symbol, item))
        except RowError as exc:
            batch.refuse(item, str(exc), run_id, symbol)
    return batch


def ticker_rows(
    exchange: str,
    tickers: dict[str, dict[str, Any]],
    symbols: list[str],
    received_ms: int,
    run_id: str | None,
    unparsed: list[tuple[dict[str, Any], str | None, str]] = (),
    *,
    markets: Mapping[str, Mapping[str, Any]] | None = None,
) -> Batch:
    """Normalize ccxt ``fetch_tickers`` output for the requested ``symbols``.

    ``markets``: the ccxt markets of ``symbols`` (``{symbol: market}``, as ``load_markets``
    gives them; ``contract``, ``contractSize``, ``inverse`` are read) so that the volumes get one
    unit per column (``ticker_volumes``); without them (or for a symbol missing from them) the
    volumes are stored as ccxt gives them.

    Row: exchange, symbol, ts (exchange time, else receipt time), ts_source ('exchange' |
    'received'), bid, ask, last, mark_price, index_price (quote currency), base_volume (base
    currency), quote_volume (quote currency), contract_volume (contracts, when the venue counts in
    contracts), collected_at, run_id. Negative/zero or non-numeric prices are quarantined.
    """
    collected_at = ms_to_datetime(received_ms)
    markets = markets or {}

    def build(symbol: str, t: dict[str, Any]) -> dict[str, Any]:
        ts, source = _stamp(t, received_ms)
        prices = {
            "bid": _number(t, "bid", positive=True),
            "ask": _number(t, "ask", positive=True),
            "last": _number(t, "last", positive=True),
            "mark_price": _number(t, "markPrice", positive=True),
            "index_price": _number(t, "indexPrice", positive=True),
        }
        price = prices["last"] or prices["mark_price"] or prices["index_price"]
        base, quote, contracts = ticker_volumes(
            _number(t, "baseVolume"), _number(t, "quoteVolume"), price, markets.get(symbol)
        )
        return {
            "exchange": exchange,
            "symbol": symbol,
            "ts": ts,
            "ts_source": source,
            **prices,
            "base_volume": base,
            "quote_volume": quote,
            "contract_volume": contracts,
            "collected_at": collected_at,
            "run_id": run_id,
        }

    batch = Batch(exchange, "tickers")
    return _normalize_each(batch, tickers, symbols, run_id, build, unparsed, received_ms)


Volumes = tuple[float | None, float | None, float | None]


def _readings(
    base: float, quote: float, size: float, inverse: bool
) -> list[tuple[float, Volumes]]:
    """Each way ccxt's ``(baseVolume, quoteVolume)`` can be meant on a contract market, as
    ``(quote / base ratio it implies, divided by the price; (base, quote, contracts))``."""
    as_given = (quote / base, (base, quote, None))
    if not inverse:  # a contract is ``size`` base units
        return [as_given, (quote / (base * size), (base * size, quote, base))]
    return [  # a contract is ``size`` quote units
        as_given,
        ((base * size) / quote, (quote, base * size, base)),  # contracts, and base as "quote"
    ]


def ticker_volumes(
    base: float | None,
    quote: float | None,
    price: float | None,
    market: Mapping[str, Any] | None,
) -> Volumes:
    """ccxt's ticker ``baseVolume`` and ``quoteVolume`` -> ``(base currency, quote currency,
    contracts)`` over the venue's 24 h, with ``market`` the ccxt market (``contractSize``: base
    units per contract on a linear market, quote units on an inverse one) and ``price`` the last
    (else mark, else index) price in quote currency.

    ccxt does not give one unit for contract markets (4.5.90): binanceusdm, bybit linear, bingx,
    kucoinfutures (contract size 0.001 and all) give base and quote; binancecoinm and deribit
    inverse too; okx gives the contract count as ``baseVolume`` and no quote volume; bybit and
    phemex inverse give the contract count (1 USD each) as ``baseVolume`` and the base amount as
    ``quoteVolume``. So the rule reads the figures, not the venue:

    - no market, not a contract, no contract size, a linear contract of size 1, or no (or zero)
      ``baseVolume``: as given;
    - both figures positive and a price: the reading whose quote/base ratio is nearest the price
      (in ratio, ``|log(ratio / price)|``; a tie keeps ccxt's reading): as given; or, linear,
      ``baseVolume`` in contracts (base = contracts x size); or, inverse, ``baseVolume`` in
      contracts and ``quoteVolume`` in base (quote = contracts x size);
    - otherwise (``baseVolume`` alone, as okx; nothing to check it against): ``baseVolume`` is
      taken as contracts, ccxt's unit for amounts on contract markets: linear, base = contracts x
      size; inverse, quote = contracts x size and base None (it would need the 24 h average
      price, which the ticker does not give). A quote volume alone is kept; base stays None.
    """
    size = market.get("contractSize") if market else None
    inverse = bool(market and market.get("inverse"))
    if (
        not market
        or not market.get("contract")
        or not isinstance(size, int | float)
        or size <= 0
        or (size == 1 and not inverse)
        or not base  # None, or no volume in any unit
    ):
        return base, quote, None
    size = float(size)
    if quote and base and price:
        readings = _readings(base, quote, size, inverse)
        return min(readings, key=lambda reading: abs(math.log(reading[0] / price)))[1]
    if inverse:
        return None, base * size, base
    return base * size, quote, base


def funding_rate_rows(
    exchange: str,
    rates: dict[str, dict[str, Any]],
    symbols: list[str],
    received_ms: int,
    run_id: str | None,
    max_abs_rate: float,
    unparsed: list[tuple[dict[str, Any], str | None, str]] = (),
) -> Batch:
    """Normalize ccxt ``fetch_funding_rates`` output for the requested ``symbols``.

    Row: exchange, symbol, ts (observation: exchange time, else receipt), ts_source,
    funding_rate (fraction per interval, as given), funding_ts (``fundingTimestamp``),
    next_funding_rate (the venue's predicted rate, ``nextFundingRate``), next_funding_ts,
    mark_price, index_price, interval_hours, collected_at, run_id. A missing or non-numeric
    ``fundingRate`` or one with ``|rate| > max_abs_rate`` is quarantined.
    """
    collected_at = ms_to_datetime(received_ms)

    def build(symbol: str, r: dict[str, Any]) -> dict[str, Any]:
        rate = _funding_rate(r, max_abs_rate)
        ts, source = _stamp(r, received_ms)
        funding_ts = _timestamp(r, "fundingTimestamp")
        next_ts = _timestamp(r, "nextFundingTimestamp")
        return {
            "exchange": exchange,
            "symbol": symbol,
            "ts": ts,
            "ts_source": source,
            "funding_rate": rate,
            "funding_ts": ms_to_datetime(funding_ts) if funding_ts else None,
            "next_funding_rate": _number(r, "nextFundingRate"),
            "next_funding_ts": ms_to_datetime(next_ts) if next_ts else None,
            "mark_price": _number(r, "markPrice", positive=True),
            "index_price": _number(r, "indexPrice", positive=True),
            "interval_hours": interval_hours(r.get("interval")),
            "collected_at": collected_at,
            "run_id": run_id,
        }

    batch = Batch(exchange, "funding_rates")
    return _normalize_each(batch, rates, symbols, run_id, build, unparsed, received_ms)


def _funding_rate(item: dict[str, Any], max_abs_rate: float) -> float:
    rate = _number(item, "fundingRate")
    if rate is None:
        raise RowError("fundingRate=None: missing")
    if abs(rate) > max_abs_rate:
        raise RowError(f"fundingRate={rate!r}: |rate| above {max_abs_rate} per interval")
    return rate


def funding_history_rows(
    exchange: str,
    symbol: str,
    history: list[dict[str, Any]],
    interval_hours_: float | None,
    received_ms: int,
    run_id: str | None,
    max_abs_rate: float,
    batch: Batch | None = None,
) -> Batch:
    """Normalize ccxt ``fetch_funding_rate_history`` output for one symbol (appends to ``batch``).

    Row: exchange, symbol, funding_ts (settlement time), funding_rate (realized, fraction per
    interval), interval_hours (as known at collection), collected_at, run_id. Rows for another
    symbol, without a settlement time or with a bad rate are quarantined.
    """
    batch = batch or Batch(exchange, "funding_history")
    collected_at = ms_to_datetime(received_ms)
    for item in history:
        batch.requested += 1
        try:
            if item.get("symbol") != symbol:
                raise RowError(f"symbol={item.get('symbol')!r}: expected {symbol!r}")
            _check_raw(item)
            settled = _timestamp(item, "timestamp")
            if settled is None:
                raise RowError("timestamp=None: a settlement needs its time")
            batch.rows.append(
                {
                    "exchange": exchange,
                    "symbol": symbol,
                    "funding_ts": ms_to_datetime(settled),
                    "funding_rate": _funding_rate(item, max_abs_rate),
                    "interval_hours": interval_hours_,
                    "collected_at": collected_at,
                    "run_id": run_id,
                }
            )
        except RowError as exc:
            batch.refuse(item, str(exc), run_id, symbol)
    return batch


def instrument_rows(exchange: str, markets: dict[str, dict[str, Any]], seen_ms: int) -> list[dict]:
    """ccxt markets (``{symbol: market}``) -> instrument rows.

    Row: exchange, symbol, market_id (the venue's own id), base, quote, settle, linear, inverse,
    contract_size (base units per contract), active, first_seen, last_seen.
    """
    seen = ms_to_datetime(seen_ms)
    return [
        {
            "exchange": exchange,
            "symbol": symbol,
            "market_id": market.get("id"),
            "base": market.get("base"),
            "quote": market.get("quote"),
            "settle": market.get("settle"),
            "linear": bool(market.get("linear") or not market.get("inverse")),
            "inverse": bool(market.get("inverse")),
            "contract_size": market.get("contractSize"),
            "active": market.get("active") is not False,
            "first_seen": seen,
            "last_seen": seen,
        }
        for symbol, market in markets.items()
    ]
