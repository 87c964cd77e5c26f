"""What a venue can do, per dataset, derived from ccxt itself (no network, no list of venues).

Every decision here follows from the ccxt exchange class: its ``has`` flags (``fetchTickers``,
``fetchFundingRates``, ``fetchFundingRateHistory``, ``fetchFundingIntervals``...), its market-type
options (``options['fetchMarkets']``) and its ``rateLimit``. ``perpflow.exchanges`` executes the
plans; ``python -m perpflow.capabilities`` prints the table of every ccxt venue that lists
perpetual swaps (``docs/venues.md`` is that output, and a test keeps the two equal).

What ccxt cannot tell (how a venue takes an upper time bound in history requests, its history
page cap) stays in ``perpflow.exchanges.CAPABILITIES``; behaviour the venue shows only when
called (a bulk call it refuses, rows it cannot parse) is handled where it happens, by fallback
and quarantine, never by naming the venue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import ccxt

DATASETS = ("tickers", "funding_rates", "funding_history")
CONTRACT_TYPES = ("linear", "inverse")

BULK, PER_SYMBOL, UNSUPPORTED = "bulk", "per_symbol", "unsupported"

# ccxt ``has`` flag of the bulk and the single-symbol call of each snapshot dataset.
_SNAPSHOT_CALLS = {
    "tickers": (("fetchTickers", "fetch_tickers"), ("fetchTicker", "fetch_ticker")),
    "funding_rates": (
        ("fetchFundingRates", "fetch_funding_rates"),
        ("fetchFundingRate", "fetch_funding_rate"),
    ),
}
# Market types a ccxt ``options['fetchMarkets']['types']`` entry may name that hold no perpetual.
_NOT_PERPETUAL = {"spot", "margin", "option", "future", "contract"}
# Seconds a fetch step is given beyond its requests' pacing (network latency, parsing).
BASE_BUDGET_S = 60.0
# A request is given this many times its pacing interval (venues answer slower than they allow).
PACING_MARGIN = 2.0


@dataclass(frozen=True)
class DatasetPlan:
    """How one dataset is fetched from one venue.

    ``mode``: ``bulk`` (one call for all symbols: ``method``), ``per_symbol`` (``method`` once per
    symbol, concurrently under the venue's rate limit) or ``unsupported`` (ccxt marks every call
    for it unsupported; the step is skipped with ledger status ``unsupported``). ``fallback``: the
    single-symbol method used when the venue refuses the bulk call at run time (None when there
    is none). ``reason``: the ccxt fact the decision follows from.
    """

    dataset: str
    mode: str
    method: str | None
    fallback: str | None
    reason: str

    @property
    def supported(self) -> bool:
        """False when the venue cannot serve the dataset through ccxt at all."""
        return self.mode != UNSUPPORTED


@dataclass(frozen=True)
class VenueProfile:
    """Everything the collectors decide about one ccxt venue before calling it.

    ``plans``: one ``DatasetPlan`` per dataset of ``DATASETS``; ``market_types``: the
    ``options['fetchMarkets']['types']`` value that makes ``load_markets`` fetch only the market
    lists that can hold the wanted perpetuals (None: ccxt has no such option, it loads what it
    loads); ``interval_source``: where funding intervals come from (``fetchFundingIntervals``, a
    call ccxt has; else the funding-rate payload's ``interval`` when the venue gives one, else
    inferred from consecutive settlements); ``request_interval_s``: ccxt's ``rateLimit`` in
    seconds, the pacing of one client.
    """

    id: str
    plans: dict[str, DatasetPlan]
    market_types: Any
    interval_source: str
    request_interval_s: float

    def budget_seconds(self, calls: int) -> float:
        """Seconds a step making ``calls`` requests is allowed: ``BASE_BUDGET_S`` plus each
        request's pacing interval times ``PACING_MARGIN`` (so a venue fetched one symbol at a
        time is given time in proportion to its symbols, not a fixed timeout)."""
        return BASE_BUDGET_S + max(calls, 1) * self.request_interval_s * PACING_MARGIN


def _has(has: dict[str, Any], flag: str) -> bool:
    # ccxt: True, 'emulated' (ccxt builds it from other calls) or False/None (unsupported).
    return bool(has.get(flag))


def plan_dataset(has: dict[str, Any], dataset: str) -> DatasetPlan:
    """The plan for ``dataset`` from a ccxt ``has`` dict. Raises ``ValueError`` for an unknown
    dataset name."""
    if dataset == "funding_history":
        if _has(has, "fetchFundingRateHistory"):
            return DatasetPlan(dataset, PER_SYMBOL, "fetch_funding_rate_history", None,
                               "has['fetchFundingRateHistory']")
        return DatasetPlan(dataset, UNSUPPORTED, None, None,
                           "has['fetchFundingRateHistory'] is not set")
    if dataset not in _SNAPSHOT_CALLS:
        raise ValueError(f"dataset: expected one of {DATASETS}, got {dataset!r}")
    (bulk_flag, bulk), (single_flag, single) = _SNAPSHOT_CALLS[dataset]
    fallback = single if _has(has, single_flag) else None
    if _has(has, bulk_flag):
        return DatasetPlan(dataset, BULK, bulk, fallback, f"has['{bulk_flag}']")
    if fallback:
        return DatasetPlan(dataset, PER_SYMBOL, single, None,
                           f"has['{bulk_flag}'] is not set; has['{single_flag}']")
    return DatasetPlan(dataset, UNSUPPORTED, None, None,
                       f"neither has['{bulk_flag}'] nor has['{single_flag}']")


def swap_market_types(fetch_markets_option: Any, contract_types: tuple[str, ...]) -> Any:
    """The ``options['fetchMarkets']['types']`` value restricted to what can hold perpetuals of
    ``contract_types`` (``linear``/``inverse``), or None when the venue's option has no types.

    A list keeps the names that are not known non-perpetual types (``spot``, ``option``,
    ``future``, ``margin``, ``contract``), and of ``linear``/``inverse`` only those wanted; a dict
    (``{'spot': True, 'linear': True}``) turns the others off the same way. An empty result is
    returned as an empty list (no market list can hold the wanted perpetuals).
    """
    types = fetch_markets_option.get("types") if isinstance(fetch_markets_option, dict) else None

    def keep(name: str) -> bool:
        if name in CONTRACT_TYPES:
            return name in contract_types
        return name not in _NOT_PERPETUAL

    if isinstance(types, list):
        return [name for name in types if keep(name)]
    if isinstance(types, dict):
        return {name: (value if keep(name) else False) for name, value in types.items()}
    return None


def _interval_source(has: dict[str, Any]) -> str:
    if _has(has, "fetchFundingIntervals"):
        return "fetchFundingIntervals where the funding payload has none; else inferred"
    return "funding payload's interval where given; else inferred from settlements"


def profile(exchange: Any, contract_types: tuple[str, ...] = CONTRACT_TYPES) -> VenueProfile:
    """The ``VenueProfile`` of a ccxt exchange instance (sync or async class; built offline, no
    request is sent) for perpetuals of ``contract_types``."""
    has = exchange.has
    return VenueProfile(
        id=exchange.id,
        plans={dataset: plan_dataset(has, dataset) for dataset in DATASETS},
        market_types=swap_market_types(exchange.options.get("fetchMarkets"), contract_types),
        interval_source=_interval_source(has),
        request_interval_s=float(exchange.rateLimit) / 1000.0,
    )


@cache
def lists_perpetuals(exchange_id: str) -> bool:
    """True when ccxt's class for ``exchange_id`` says the venue has swap markets
    (``has['swap']``). Raises ``ValueError`` for an unknown ccxt id."""
    if exchange_id not in ccxt.exchanges:
        raise ValueError(f"id: unknown ccxt exchange id {exchange_id!r}")
    return bool(getattr(ccxt, exchange_id)().has.get("swap"))


def perpetual_venues() -> list[str]:
    """Every ccxt exchange id whose class lists swap markets, sorted (computed from ccxt)."""
    return [exchange_id for exchange_id in ccxt.exchanges if lists_perpetuals(exchange_id)]


def _cell(plan: DatasetPlan) -> str:
    if plan.mode == BULK:
        return f"bulk `{plan.method}`" + (f", falls back to `{plan.fallback}`" if plan.fallback else "")
    if plan.mode == PER_SYMBOL:
        return f"per symbol `{plan.method}`"
    return "unsupported"


def _types_cell(types: Any) -> str:
    if types is None:
        return "all (no type option)"
    if isinstance(types, dict):
        types = [name for name, on in types.items() if on]
    return ", ".join(types) if types else "none"


def venues_markdown() -> str:
    """The generated venue table (``docs/venues.md``): one row per ccxt venue listing perpetual
    swaps, with each dataset's plan, the market types loaded, where intervals come from and the
    request pacing. Built from the installed ccxt, so it changes only when ccxt does."""
    lines = [
        "# Venues",
        "",
        f"Generated by `python -m perpflow.capabilities` from ccxt {ccxt.__version__}: every ccxt",
        "venue whose class lists perpetual swaps, and what the collectors do with it. A venue is",
        "added by configuration (`{\"id\": \"...\"}`); nothing below is a hand-kept list.",
        "",
        "- **bulk**: one call for every symbol; when the venue refuses it at run time (not",
        "  supported, too many symbols), the collector asks for all symbols and keeps the selected",
        "  ones, then falls back to one call per symbol.",
        "- **per symbol**: one call per symbol, concurrently, paced by the venue's rate limit; the",
        "  step's time budget grows with the number of calls.",
        "- **unsupported**: ccxt has no call for it; the step is skipped with ledger status",
        "  `unsupported` (report-health shows n/a).",
        "",
        "| venue | tickers | funding rates | funding history | market types loaded "
        "| funding interval | ms per request |",
        "|---|---|---|---|---|---|---|",
    ]
    for exchange_id in perpetual_venues():
        p = profile(getattr(ccxt, exchange_id)())
        cells = [_cell(p.plans[d]) for d in DATASETS]
        pacing = f"{p.request_interval_s * 1000:g}" if math.isfinite(p.request_interval_s) else "?"
        lines.append(
            f"| {exchange_id} | " + " | ".join(cells)
            + f" | {_types_cell(p.market_types)} | {p.interval_source} | {pacing} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(venues_markdown(), end="")
