"""The collectors' import path stays free of great-expectations and pandas (seconds and about
200 MB): only the data-quality flow imports them."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

HEAVY = ("great_expectations", "pandas", "perpflow.quality", "tasks.quality")


def _loaded(*modules: str) -> list[str]:
    code = (
        "import importlib, sys\n"
        f"for name in {list(modules)!r}: importlib.import_module(name)\n"
        f"print(','.join(m for m in {list(HEAVY)!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return [name for name in done.stdout.strip().split(",") if name]


def test_collectors_do_not_import_great_expectations_or_pandas():
    assert (
        _loaded("flows.collect_tickers", "flows.sweep_funding_rates", "flows.report_health") == []
    )


def test_the_data_quality_flow_does():
    assert _loaded("flows.check_data_quality") == list(HEAVY)
