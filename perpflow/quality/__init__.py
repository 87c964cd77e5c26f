"""Data quality: great-expectations 1.x suites over a time window of the market data.

``frames`` loads a window into pandas DataFrames (with the derived columns the expectations
read), ``suites`` declares the expectations under stable keys, ``validate`` runs them in a
file-backed GX context, builds the Data Docs and turns the results into rows.
Importing this package imports great-expectations (seconds, ~200 MB): only the data-quality flow
does; the collectors never import it.
"""

from perpflow.quality.frames import QualityWindow, WindowData, load_frames
from perpflow.quality.suites import Thresholds, suites
from perpflow.quality.validate import SuiteRun, validate

__all__ = [
    "QualityWindow",
    "SuiteRun",
    "Thresholds",
    "WindowData",
    "load_frames",
    "suites",
    "validate",
]
