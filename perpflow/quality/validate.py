"""Run the suites in a file-backed great-expectations context and build its Data Docs.

The context lives under ``<directory>/gx`` (expectation suites, validation definitions,
checkpoints, validation results, and the HTML Data Docs site under
``gx/uncommitted/data_docs/local_site``). Every run stores one validation result per suite, named
after the caller's run (the Prefect flow-run id), and rebuilds the pages of those results and the
index page.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import great_expectations as gx
import pandas as pd
from great_expectations import expectations as gxe
from great_expectations.core.run_identifier import RunIdentifier
from great_expectations.data_context.types.base import ProgressBarsConfig

from perpflow.quality.suites import INDEX_COLUMNS, suite

SOURCE = "perpflow"
BATCH = "window"
SITE = "local_site"


@dataclass(frozen=True)
class SuiteRun:
    """The outcome of one validation of a window.

    ``rows``: one dict per expectation (``expectation`` key, ``dataset``, ``expectation_type``,
    ``success``, ``element_count``, ``unexpected_count``, ``unexpected_percent`` (0..100),
    ``examples``: up to N unexpected rows as JSON-able dicts naming their key columns, or
    ``[{'error': ...}]`` when the expectation could not be evaluated); ``docs_index``: the Data
    Docs index page and ``docs_pages``: ``{dataset: validation result page}``, as file:// URLs.
    """

    rows: list[dict[str, Any]]
    docs_index: str
    docs_pages: dict[str, str]


def _plain(value: Any) -> Any:
    """A JSON-able copy of a GX result value (numpy scalars, timestamps, NaN -> None)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _examples(result: Any, limit: int) -> list[Any]:
    info = result.exception_info or {}
    if info.get("raised_exception"):
        return [{"error": str(info.get("exception_message"))[:500]}]
    details = result.result or {}
    found = (
        details.get("partial_unexpected_index_list") or details.get("partial_unexpected_list") or []
    )
    return _plain(list(found)[:limit])


def _row(dataset: str, result: Any, limit: int) -> dict[str, Any]:
    details = result.result or {}
    percent = details.get("unexpected_percent")
    return {
        "expectation": result.expectation_config.meta["key"],
        "dataset": dataset,
        "expectation_type": result.expectation_config.type,
        "success": bool(result.success),
        "element_count": details.get("element_count"),
        "unexpected_count": details.get("unexpected_count"),
        "unexpected_percent": None if percent is None else round(float(percent), 4),
        "examples": _examples(result, limit),
    }


def _context(directory: Path):
    context = gx.get_context(mode="file", project_root_dir=directory)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _batch_definition(context, name: str):
    try:
        source = context.data_sources.get(SOURCE)
    except KeyError:
        source = context.data_sources.add_pandas(SOURCE)
    try:
        asset = source.get_asset(name)
    except LookupError:
        asset = source.add_dataframe_asset(name)
    try:
        return asset.get_batch_definition(BATCH)
    except KeyError:
        return asset.add_batch_definition_whole_dataframe(BATCH)


def validate(
    frames: dict[str, pd.DataFrame],
    expectations: dict[str, list[gxe.Expectation]],
    directory: str | Path,
    run_name: str,
    examples: int = 5,
    on_suite_done: Callable[[str], None] | None = None,
) -> SuiteRun:
    """Validate each frame (``frames[name]``) against ``expectations[name]`` in the file-backed
    GX context under ``directory`` (created when absent), store the results under ``run_name``,
    and build their Data Docs pages and the index. ``on_suite_done(name)`` is called after each
    suite (for progress). Blocking (CPU-bound); returns a ``SuiteRun``. Raises ``KeyError`` for
    a suite without its frame.
    """
    context = _context(Path(directory))
    run_id = RunIdentifier(run_name=run_name, run_time=datetime.now(UTC))
    rows: list[dict[str, Any]] = []
    identifiers = {}
    for name, expected in expectations.items():
        gx_suite = context.suites.add_or_update(suite(name, expected))
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(
                name=f"perpflow-{name}", data=_batch_definition(context, name), suite=gx_suite
            )
        )
        checkpoint = context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=f"perpflow-{name}",
                validation_definitions=[definition],
                result_format={
                    "result_format": "SUMMARY",
                    "unexpected_index_column_names": INDEX_COLUMNS[name],
                    "partial_unexpected_count": max(examples, 1),
                },
            )
        )
        outcome = checkpoint.run(batch_parameters={"dataframe": frames[name]}, run_id=run_id)
        for identifier, result in outcome.run_results.items():
            identifiers[name] = identifier
            rows += [_row(name, item, examples) for item in result.results]
        if on_suite_done is not None:
            on_suite_done(name)
    index = context.build_data_docs(
        site_names=[SITE], resource_identifiers=list(identifiers.values())
    )
    pages = {
        name: context.get_docs_sites_urls(resource_identifier=identifier, site_name=SITE)[0][
            "site_url"
        ]
        for name, identifier in identifiers.items()
    }
    return SuiteRun(sorted(rows, key=lambda row: row["expectation"]), index[SITE], pages)
