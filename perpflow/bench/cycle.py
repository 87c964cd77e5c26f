"""Collection cycle and worker memory, against emulated venues with a latency per request.

The cycle itself (the collect-tickers flow) is orchestration, which this package must not import:
the caller injects it. ``collection_cycle(run, ...)`` starts the emulator (its own process),
calls ``await
run(env)`` once, where ``env`` holds the ``PERPFLOW_*`` variables pointing a collection at the
emulated venues and the workload database, and compares the wall time with the physical floor:
the slowest venue's pure request time, read from the emulator's request log (per venue, the
length of the union of its requests' intervals, latency included). ``worker_rss(target, ...)``
runs ``python -m perpflow.bench.worker MODULE:FUNCTION`` in a fresh process with that ``env``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from perpflow.bench.figures import LOWER, Figure, compared
from perpflow.emulator import FORMATS
from perpflow.emulator.requestlog import RequestRecord

RSS_BUDGET_MB = 400.0
WORKER_TIMEOUT_S = 900
MB = 1024 * 1024
CONTROL_TIMEOUT_S = 30

CycleRunner = Callable[[dict[str, str]], Awaitable[list[dict[str, Any]]]]


class EmulatorProcess:
    """A ``python -m perpflow.emulator`` process serving generated venues on a free loopback
    port (its own process, like a real exchange, so its work does not compete with the measured
    run for this interpreter). ``base_url``; ``venues``: entries for ``PERPFLOW_EXCHANGES``."""

    def __init__(self, process: subprocess.Popen, announced: dict, names: list[tuple[str, str]]):
        self.process = process
        self.base_url: str = announced["base_url"]
        self.venues = [
            {
                "id": fmt,
                "name": name,
                "api_url": announced["venues"][name],
                "ccxt_config": {"enableRateLimit": False},
            }
            for name, fmt in names
        ]

    def _control(self, method: str, resource: str) -> dict:
        request = urllib.request.Request(f"{self.base_url}/_emulator/{resource}", method=method)
        with urllib.request.urlopen(request, timeout=CONTROL_TIMEOUT_S) as answer:
            return json.load(answer)

    def clear_requests(self) -> None:
        """Forget the requests answered so far."""
        self._control("DELETE", "requests")

    def requests(self) -> list[RequestRecord]:
        """The requests answered since the last ``clear_requests`` (at most the log's size)."""
        return [RequestRecord(**r) for r in self._control("GET", "requests")["requests"]]


@contextmanager
def emulated_venues(venues: int, symbols: int, latency_ms: float) -> Iterator[EmulatorProcess]:
    """An emulator process with ``venues`` generated venues named ``<format>-<nn>``, the formats
    in turn, each listing ``symbols`` perpetuals and answering after ``latency_ms``; stopped on
    exit. Raises ``RuntimeError`` with its error output when it does not start."""
    formats = sorted(FORMATS)
    names = [(f"{formats[i % len(formats)]}-{i:02d}", formats[i % len(formats)]) for i in range(venues)]
    command = [
        sys.executable, "-m", "perpflow.emulator", "--port", "0", "--symbols", str(symbols),
        "--latency-ms", str(latency_ms), "--venues", ",".join(f"{n}={f}" for n, f in names),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"emulator did not start: {process.stderr.read()[-2000:]}")
        yield EmulatorProcess(process, json.loads(line), names)
    finally:
        process.terminate()
        process.communicate(timeout=CONTROL_TIMEOUT_S)


def cycle_environment(configs: list[dict], database_url: str) -> dict[str, str]:
    """The ``PERPFLOW_*`` variables of a collection over ``configs`` into ``database_url``."""
    return {"PERPFLOW_EXCHANGES": json.dumps(configs), "PERPFLOW_DATABASE_URL": database_url}


def request_floor_ms(records: list[RequestRecord]) -> float:
    """The slowest venue's pure request time (ms): per venue, the length of the union of its
    requests' ``[arrival, arrival + duration]`` intervals; 0.0 for no requests."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for record in records:
        spans.setdefault(record.venue, []).append(
            (record.monotonic, record.monotonic + record.duration_ms / 1000)
        )
    floor = 0.0
    for intervals in spans.values():
        total, end = 0.0, float("-inf")
        for start, stop in sorted(intervals):
            if stop > end:
                total += stop - max(start, end)
                end = stop
        floor = max(floor, total)
    return floor * 1000


async def collection_cycle(
    run: CycleRunner, database_url: str, venues: int, symbols: int, latency_ms: float
) -> list[Figure]:
    """Time one collection cycle (``await run(env)``, returning its ledger dicts) over
    ``venues`` x ``symbols`` emulated perpetuals with ``latency_ms`` per request.

    Figures ``cycle.<venues>x<symbols>.{wall,floor,overhead}`` in ms; ``wall`` has ``floor`` as
    its baseline (ratio = wall / floor, lower is better). Raises ``RuntimeError`` when a venue's
    step did not end ``ok`` or stored nothing.
    """
    label = f"cycle.{venues}x{symbols}"
    with emulated_venues(venues, symbols, latency_ms) as emulator:
        emulator.clear_requests()
        started = time.perf_counter()
        ledger = await run(cycle_environment(emulator.venues, database_url))
        wall = (time.perf_counter() - started) * 1000
        floor = request_floor_ms(emulator.requests())
    failed = [row for row in ledger if row["status"] != "ok" or not row["received"]]
    if failed or len(ledger) != venues:
        raise RuntimeError(
            f"{label}: {len(ledger)} ledger rows for {venues} venues; not ok: {failed}"
        )
    note = f"{latency_ms:g} ms latency per request; {sum(r['stored'] for r in ledger)} rows stored"
    floor_figure = Figure(f"{label}.floor", floor, "ms", LOWER, note=note, yardstick=True)
    return [
        compared(Figure(f"{label}.wall", wall, "ms", LOWER, note=note), floor_figure),
        floor_figure,
        Figure(f"{label}.overhead", wall - floor, "ms", LOWER, note=note),
    ]


def worker_rss(
    target: str, env: dict[str, str], timeout_s: float = WORKER_TIMEOUT_S
) -> list[Figure]:
    """RSS (MB) of a fresh ``python -m perpflow.bench.worker target`` process after it imported
    ``target`` (``module:function``) and awaited it once, with ``env`` added to this process's
    environment; figures ``memory.worker.rss`` (budget ``RSS_BUDGET_MB``) and
    ``memory.worker.peak_rss``. Raises ``RuntimeError`` with the worker's last output when it
    fails."""
    done = subprocess.run(
        [sys.executable, "-m", "perpflow.bench.worker", target],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"worker {target} exited {done.returncode}: {done.stderr[-2000:]}")
    measured = json.loads(lines[-1])
    note = f"after importing and running {target} once"
    return [
        Figure(
            "memory.worker.rss",
            measured["rss_bytes"] / MB,
            "MB",
            LOWER,
            budget=RSS_BUDGET_MB,
            note=note,
        ),
        Figure("memory.worker.peak_rss", measured["peak_rss_bytes"] / MB, "MB", LOWER, note=note),
    ]
