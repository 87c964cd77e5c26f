"""The great-expectations suites, one per dataset frame, each expectation under a stable key.

The key (``meta['key']``, e.g. ``tickers.bid_le_ask``) names the check in the artifacts, the
``quality_results`` table and the Data Docs; the description says what it checks, with units.
"""

from __future__ import annotations

from dataclasses import dataclass

import great_expectations as gx
from great_expectations import expectations as gxe

from perpflow.backfill import GAP_RATIO

# Columns that identify a row in the examples of an expectation's unexpected rows.
INDEX_COLUMNS = {
    "tickers": ["exchange", "symbol", "ts", "obs_key"],
    "funding_rates": ["exchange", "symbol", "ts", "obs_key"],
    "funding_history": ["exchange", "symbol", "funding_ts"],
    "coverage": ["exchange"],
    "funding_continuity": ["exchange", "symbol", "funding_ts", "previous_ts"],
}


@dataclass(frozen=True)
class Thresholds:
    """Bounds of the suites: ``mark_index_band`` (max |mark / index - 1|, fraction),
    ``max_abs_funding_rate`` (fraction per funding interval), ``clock_skew_seconds`` (how far a
    row's time may lead its collection time), ``max_age_seconds`` (how far a ticker's or rate's
    time may trail it), ``min_coverage`` (share of a venue's active instruments with rows)."""

    mark_index_band: float
    max_abs_funding_rate: float
    clock_skew_seconds: float
    max_age_seconds: float
    min_coverage: float


def _meta(key: str, text: str) -> dict:
    return {"meta": {"key": key}, "description": f"**{key}**: {text}"}


def _keys_present(dataset: str, time_column: str, observed: bool = False) -> list:
    """Key columns set, and the key unique: ``(exchange, symbol, time)``, plus ``obs_key`` (the
    digest of the observed values) for the observation tables, where several observations of an
    instrument may share a time when their values differ."""
    keys = ["exchange", "symbol", time_column, *(["obs_key"] if observed else [])]
    return [
        *(
            gxe.ExpectColumnValuesToNotBeNull(
                column=c, **_meta(f"{dataset}.{c}_not_null", f"{c} is set")
            )
            for c in keys[:3]
        ),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=keys,
            **_meta(f"{dataset}.key_unique", f"({', '.join(keys)}) is unique"),
        ),
    ]


def _positive(dataset: str, column: str) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToBeBetween(
        column=column,
        min_value=0,
        strict_min=True,
        **_meta(f"{dataset}.{column}_positive", f"{column} > 0 (quote currency) where given"),
    )


def _rate_bound(dataset: str, column: str, t: Thresholds) -> gxe.Expectation:
    bound = t.max_abs_funding_rate
    return gxe.ExpectColumnValuesToBeBetween(
        column=column,
        min_value=-bound,
        max_value=bound,
        **_meta(
            f"{dataset}.{column}_within_bound", f"|{column}| <= {bound:g} per funding interval"
        ),
    )


def _timing(dataset: str, column: str, t: Thresholds, stale: bool) -> list:
    checks = [
        gxe.ExpectColumnValuesToBeBetween(
            column="ts_lag_seconds",
            min_value=-t.clock_skew_seconds,
            **_meta(
                f"{dataset}.{column}_not_in_future",
                f"{column} at most {t.clock_skew_seconds:g} s after collected_at (clock skew)",
            ),
        )
    ]
    if stale:
        checks.append(
            gxe.ExpectColumnValuesToBeBetween(
                column="ts_lag_seconds",
                max_value=t.max_age_seconds,
                **_meta(
                    f"{dataset}.{column}_not_stale",
                    f"{column} at most {t.max_age_seconds:g} s before collected_at",
                ),
            )
        )
    return checks


def _mark_band(dataset: str, t: Thresholds) -> gxe.Expectation:
    return gxe.ExpectColumnValuesToBeBetween(
        column="mark_index_deviation",
        max_value=t.mark_index_band,
        **_meta(
            f"{dataset}.mark_within_band_of_index",
            f"|mark_price / index_price - 1| <= {t.mark_index_band:g} where both are given",
        ),
    )


def suites(t: Thresholds) -> dict[str, list[gxe.Expectation]]:
    """``{dataset frame name: expectations}`` for the frames of ``perpflow.quality.frames``."""
    return {
        "tickers": [
            *_keys_present("tickers", "ts", observed=True),
            *(_positive("tickers", c) for c in ("bid", "ask", "last", "mark_price", "index_price")),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="ask",
                column_B="bid",
                or_equal=True,
                ignore_row_if="either_value_is_missing",
                **_meta("tickers.bid_le_ask", "bid <= ask (no crossed book) where both are given"),
            ),
            _mark_band("tickers", t),
            *_timing("tickers", "ts", t, stale=True),
        ],
        "funding_rates": [
            *_keys_present("funding_rates", "ts", observed=True),
            _rate_bound("funding_rates", "funding_rate", t),
            _rate_bound("funding_rates", "next_funding_rate", t),
            *(_positive("funding_rates", c) for c in ("mark_price", "index_price")),
            _mark_band("funding_rates", t),
            *_timing("funding_rates", "ts", t, stale=True),
        ],
        "funding_history": [
            *_keys_present("funding_history", "funding_ts"),
            _rate_bound("funding_history", "funding_rate", t),
            *_timing("funding_history", "funding_ts", t, stale=False),
        ],
        "coverage": [
            gxe.ExpectColumnValuesToBeBetween(
                column=f"{dataset}_coverage",
                min_value=t.min_coverage,
                **_meta(
                    f"coverage.{dataset}",
                    f"per venue, at least {t.min_coverage:.0%} of the active instruments "
                    f"have {dataset} rows in the window",
                ),
            )
            for dataset in ("tickers", "funding_rates")
        ],
        "funding_continuity": [
            gxe.ExpectColumnValuesToBeBetween(
                column="intervals_since_previous",
                max_value=GAP_RATIO,
                strict_max=True,
                **_meta(
                    "funding_history.continuity",
                    "each settlement follows the previous one of its symbol within "
                    f"{GAP_RATIO:g} funding intervals (else settlements are missing)",
                ),
            )
        ],
    }


def suite(name: str, expectations: list[gxe.Expectation]) -> gx.ExpectationSuite:
    """An unsaved GX suite ``perpflow-<name>`` holding ``expectations``."""
    return gx.ExpectationSuite(name=f"perpflow-{name}", expectations=expectations)
