"""Deployment steps (prefect.yaml ``pull``): run flows from the project root on any machine."""

from __future__ import annotations

import os
from pathlib import Path

import flows

PROJECT_ROOT = Path(flows.__file__).resolve().parent.parent
PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"


def set_project_working_directory() -> dict[str, str]:
    """Change the working directory to the directory holding the installed ``flows`` package
    (the repository root of an editable install), so that entrypoints such as
    ``flows/collect_tickers.py:collect_tickers`` and relative paths resolve there. Returns
    ``{"directory": path}`` for later steps."""
    os.chdir(PROJECT_ROOT)
    return {"directory": str(PROJECT_ROOT)}
