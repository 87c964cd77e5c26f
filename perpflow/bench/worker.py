"""``python -m perpflow.bench.worker MODULE:FUNCTION``: import ``MODULE``, await ``FUNCTION()``
once, then print one JSON line ``{"rss_bytes", "peak_rss_bytes"}`` (this process's resident set
now and at its peak). The target is named, not imported here, so this package stays free of the
orchestration it measures. Exit status 2 for a malformed target; an import error, or the
target's exception, ends it with a traceback and status 1."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import resource
import sys

import psutil


def main(argv: list[str]) -> int:
    """Entry point; returns the exit status."""
    if len(argv) != 1 or ":" not in argv[0]:
        print("usage: python -m perpflow.bench.worker MODULE:FUNCTION", file=sys.stderr)
        return 2
    module, _, name = argv[0].partition(":")
    target = getattr(importlib.import_module(module), name)
    result = target()
    if inspect.isawaitable(result):
        asyncio.run(result)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {"rss_bytes": psutil.Process().memory_info().rss, "peak_rss_bytes": peak_kib * 1024}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
