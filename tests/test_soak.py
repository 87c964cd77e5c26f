"""A bounded fault soak: many collection cycles (collect-tickers, then sweep-funding-rates, run as
flows) against three emulated venues with seeded random faults, on a PostgreSQL cluster of the
test's own that is restarted mid-soak. It ends with no duplicate key, no unaccounted ledger row,
every run's state matching its ledger, every quarantined row with a reason, and a completeness
certificate of the soak's day(s) in which every gap is explained.

Faults, drawn per cycle and venue from ``random.Random(SEED)`` (the plan is printed): HTTP 429
(with ``Retry-After``) and 503 a few times on one endpoint (recovered by the retries), 503 on one
endpoint for the whole cycle (a failed step), and, through a TCP proxy in front of each venue,
connection resets (RST instead of an answer) and stalls (no answer until ccxt's timeout); the
emulator's own controls cannot reset or stall a connection, hence the proxy. Malformed rows
(negative, non-numeric prices, missing symbols) and rows left out of the tickers response are
fixed per venue from the seed. ``SOAK_SEED``, ``SOAK_CYCLES``, ``SOAK_SPACING_S`` and
``SOAK_PG_DOWN_S`` pick another seed, more cycles, another spacing, a longer restart outage.

The schedule: cycle ``i`` starts at the ``i``-th boundary of ``SPACING`` seconds (the collectors'
interval that the certificate expects), so the certificate expects exactly one run per cycle. A
cycle that overruns its slot makes the next one start at once (a late run, as a scheduler catches
up; the certificate counts runs per instrument, not their alignment); the soak fails only when
the last cycle ends after the last slot (a missed slot would be an unexplained gap). The
restart's cycle takes ~16 s (the store's database retries wait 1 s then 5 s), hence 20 s.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from flows.collect_tickers import collect_tickers
from flows.sweep_funding_rates import sweep_funding_rates
from perpflow.completeness import compute_certificate
from perpflow.emulator import EmulatorServer, GeneratedVenue
from perpflow.store import create_engine, init_schema
from tests.test_flows import configure

pytestmark = pytest.mark.usefixtures("prefect_server")

# Knobs for a longer or harsher soak; not PERPFLOW_* (the product warns of unknown ones).
SEED = int(os.environ.get("SOAK_SEED", "13"))
CYCLES = int(os.environ.get("SOAK_CYCLES", "10"))
# Seconds between cycles = the collectors' schedule interval the certificate expects.
SPACING = int(os.environ.get("SOAK_SPACING_S", "20"))
SYMBOLS = 12
VENUES = ("binanceusdm", "bybit", "okx")
CCXT_TIMEOUT_MS = 1500
FLOW_TIMEOUT_S = 120  # hard bound on one flow run
# The newest PostgreSQL server the distribution installed (scripts/postgres.sh installs one).
PG_BIN = max(Path("/usr/lib/postgresql").glob("*/bin"),
             key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
             default=Path("/usr/lib/postgresql/15/bin"))
PG_DOWN_S = float(os.environ.get("SOAK_PG_DOWN_S", "3"))  # the restart's outage
MALFORMED_KINDS = ("negative_price", "non_numeric_price", "missing_symbol")
FAULTS = ("none", "none", "429", "503", "503 whole cycle", "resets", "stalls")


# -- a PostgreSQL cluster of the test's own ------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnCluster:
    """A throw-away PostgreSQL 15 cluster (trust auth, 127.0.0.1 on a free port, never 5432) in
    a temporary directory owned by the ``postgres`` user (``initdb`` refuses root)."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="perpflow-soak-pg-"))
        self.data = self.base / "data"
        self.port = _free_port()
        self.as_owner: list[str] = []
        self.outages: list[tuple[float, float]] = []  # (stopped, started) time.monotonic()
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
            self.as_owner = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self.as_owner, *args], capture_output=True, text=True, timeout=90)
        if done.returncode:
            log = (self.base / "log").read_text() if (self.base / "log").exists() else ""
            raise RuntimeError(f"{args[0]} failed: {done.stderr or done.stdout}\n{log[-2000:]}")

    def init(self) -> None:
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync")
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(PG_BIN / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(self.data),
                  "-l", str(self.base / "log"), "-o", options)

    def stop(self, mode: str = "fast") -> None:
        self._run(str(PG_BIN / "pg_ctl"), "stop", "-w", "-t", "60", "-m", mode,
                  "-D", str(self.data))

    def restart(self, down_s: float) -> None:
        """Stop (fast: sessions are cut), stay down ``down_s`` seconds, start again."""
        self.stop()
        stopped = time.monotonic()
        time.sleep(down_s)
        self.start()
        self.outages.append((stopped, time.monotonic()))

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def own_cluster() -> Iterator[OwnCluster]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"{PG_BIN} (Debian's PostgreSQL 15 server binaries) is absent")
    cluster = OwnCluster()
    try:
        cluster.init()
        yield cluster
    finally:
        cluster.remove()


# -- a TCP proxy that resets or stalls requests ------------------------------------------------

class FaultyProxy:
    """Forwards ``127.0.0.1:port`` to ``upstream_port``. Each chunk a client sends (one HTTP
    request: ccxt's are bodiless GETs) is, with probability ``reset``, answered by a TCP reset of
    the connection, with probability ``stall``, never answered (the connection is held until the
    client gives up), else forwarded. Runs in its own thread and event loop."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.reset = 0.0
        self.stall = 0.0
        self.rng = random.Random(0)
        self.counts = {"reset": 0, "stall": 0}
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None

    def arm(self, rng: random.Random, reset: float = 0.0, stall: float = 0.0) -> None:
        self.rng, self.reset, self.stall = rng, reset, stall

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        back = asyncio.ensure_future(self._pump(up_reader, writer))
        try:
            while data := await reader.read(65536):
                roll = self.rng.random()
                if roll < self.reset:
                    self.counts["reset"] += 1
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                if roll < self.reset + self.stall:
                    self.counts["stall"] += 1
                    await asyncio.wait_for(reader.read(), timeout=60)  # until the client leaves
                    return
                up_writer.write(data)
                await up_writer.drain()
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            up_writer.close()
            back.cancel()
            writer.close()

    @contextmanager
    def running(self) -> Iterator[FaultyProxy]:
        started: Future[None] = Future()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._client, "127.0.0.1", 0))
            self.port = self._server.sockets[0].getsockname()[1]
            started.set_result(None)
            self._loop.run_forever()

        thread = threading.Thread(target=run, name="perpflow-soak-proxy", daemon=True)
        thread.start()
        started.result(30)
        try:
            yield self
        finally:
            async def close() -> None:
                self._server.close()
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            thread.join(30)


# -- the soak ------------------------------------------------------------------------------------

def _venues(rng: random.Random) -> list[GeneratedVenue]:
    """Three small venues; each with two malformed instruments, one leaving rows out."""
    venues = []
    for position, name in enumerate(VENUES):
        bad = rng.sample(range(2, SYMBOLS), 2)
        malformed = {i: rng.choice(MALFORMED_KINDS) for i in bad}
        drop = 0.1 if position == 0 else 0.0
        venues.append(GeneratedVenue(name, symbols=SYMBOLS, seed=SEED, malformed=malformed,
                                     drop_tickers=drop))
    return venues


def _inject(server: EmulatorServer, proxies: dict[str, FaultyProxy], paths: dict[str, list[str]],
            rng: random.Random, cycle: int) -> dict[str, str]:
    """Arm this cycle's faults; returns ``{venue: fault}`` for the plan printed at the end."""
    plan = {}
    for name in VENUES:
        fault = rng.choice(FAULTS)
        path = rng.choice(paths[name])
        proxies[name].arm(random.Random(f"{SEED}-{cycle}-{name}"))
        if fault == "429":
            server.fail(name, path, status=429, times=rng.randint(1, 3), retry_after=0.2)
        elif fault == "503":
            server.fail(name, path, status=503, times=rng.randint(1, 3))
        elif fault == "503 whole cycle":
            server.fail(name, path, status=503, times=None)
        elif fault == "resets":
            proxies[name].arm(random.Random(f"{SEED}-{cycle}-{name}"), reset=0.25)
        elif fault == "stalls":
            proxies[name].arm(random.Random(f"{SEED}-{cycle}-{name}"), stall=0.1)
        plan[name] = fault if fault in ("none", "resets", "stalls") else f"{fault} {path}"
    return plan


async def _bounded(flow_call):
    return await asyncio.wait_for(flow_call(return_state=True), timeout=FLOW_TIMEOUT_S)


async def _scalar(engine, sql: str):
    async with engine.connect() as conn:
        return (await conn.execute(text(sql))).all()


DUPLICATES = {
    "tickers": "SELECT exchange, symbol, ts, bid, ask, last, mark_price, index_price, base_volume,"
               " quote_volume, count(*) FROM tickers GROUP BY exchange, symbol, ts, bid, ask, last,"
               " mark_price, index_price, base_volume, quote_volume HAVING count(*) > 1",
    "funding_rates": "SELECT exchange, symbol, ts, funding_rate, next_funding_rate, mark_price,"
                     " index_price, count(*) FROM funding_rates GROUP BY exchange, symbol, ts,"
                     " funding_rate, next_funding_rate, mark_price, index_price"
                     " HAVING count(*) > 1",
    "funding_history": "SELECT exchange, symbol, funding_ts, count(*) FROM funding_history"
                       " GROUP BY exchange, symbol, funding_ts HAVING count(*) > 1",
}


async def test_fault_soak_loses_nothing_and_hides_nothing(own_cluster, monkeypatch):
    rng = random.Random(SEED)
    url = own_cluster.url
    engine = create_engine(url)
    await init_schema(engine)
    for name, value in {"TICKER_INTERVAL_SECONDS": SPACING, "FUNDING_INTERVAL_SECONDS": SPACING,
                        "CIRCUIT_COOLDOWN_SECONDS": SPACING,
                        "DATABASE_CONNECT_TIMEOUT_SECONDS": 5}.items():
        monkeypatch.setenv(f"PERPFLOW_{name}", str(value))
    plan: list[dict[str, str]] = []
    states: list[tuple[int, str, object]] = []
    windows: list[tuple[str, float, float]] = []  # (flow, began, ended) time.monotonic()
    late: list[tuple[int, float]] = []  # (cycle, seconds after its slot began)
    restart_cycle = CYCLES // 2
    restarter: threading.Thread | None = None
    soak_started = time.monotonic()
    try:
        with EmulatorServer(_venues(rng)).running_in_thread() as server:
            proxies = {name: FaultyProxy(server.port) for name in VENUES}
            with proxies["binanceusdm"].running(), proxies["bybit"].running(), \
                    proxies["okx"].running():
                test_run = uuid.uuid4().hex
                extra = {name: {
                    "api_url": f"http://127.0.0.1:{proxies[name].port}/{name}",
                    "ccxt_config": {**server.ccxt_config(name), "enableRateLimit": False,
                                    "timeout": CCXT_TIMEOUT_MS, "testRun": test_run},
                } for name in VENUES}
                configure(monkeypatch, url, server, VENUES, **extra)
                first_slot = int(time.time()) // SPACING + 1
                for cycle in range(CYCLES):
                    boundary = (first_slot + cycle) * SPACING
                    wait = boundary - time.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    else:  # the previous cycle overran: this one catches up at once
                        late.append((cycle, round(-wait, 1)))
                    if cycle == 1:  # cycle 0 is clean: it shows which endpoints each venue serves
                        paths = {name: sorted({r.path for r in server.requests.records(name)})
                                 for name in VENUES}
                    plan.append(_inject(server, proxies, paths, rng, cycle) if cycle else {})
                    if cycle == restart_cycle:
                        restarter = threading.Thread(
                            target=own_cluster.restart, args=(PG_DOWN_S,), daemon=True)
                        threading.Timer(rng.uniform(0.2, 1.5), restarter.start).start()
                    for flow_call in (collect_tickers, sweep_funding_rates):
                        began = time.monotonic()
                        state = await _bounded(flow_call)
                        states.append((cycle, flow_call.name, state))
                        windows.append((flow_call.name, began, time.monotonic()))
                    server.clear_faults()
                    if restarter is not None and cycle == restart_cycle:
                        restarter.join(120)
                        assert not restarter.is_alive(), "the PostgreSQL restart hung"
                soak_ended = datetime.now(UTC)
                requests = server.requests.records()
                resets = sum(p.counts["reset"] for p in proxies.values())
                stalls = sum(p.counts["stall"] for p in proxies.values())
        last_slot_end = datetime.fromtimestamp((first_slot + CYCLES) * SPACING, UTC)
        assert soak_ended < last_slot_end, f"the soak overran its last slot (late cycles: {late})"
        print(f"soak: {CYCLES} cycles in {time.monotonic() - soak_started:.0f} s, seed {SEED}, "
              f"{len(requests)} requests, {resets} resets, {stalls} stalls, late: {late}")
        for cycle, faults in enumerate(plan):
            print(f"  cycle {cycle}: {faults}")
        ((stopped, started),) = own_cluster.outages
        hit = [name for name, began, ended in windows if began < started and ended > stopped]
        print(f"  PostgreSQL down {started - stopped:.1f} s, during {hit}")
        assert hit, "the PostgreSQL restart fell between runs"
        await _assert_soak(engine, states, requests, soak_ended)
    finally:
        await engine.dispose()


async def _assert_soak(engine, states, requests, soak_ended: datetime) -> None:
    # The faults did happen (the soak is no fair-weather run).
    statuses = {r.status for r in requests}
    assert {429, 503} <= statuses, statuses
    ledger = await _scalar(engine, "SELECT run_id, exchange, dataset, status, requested, stored,"
                                   " duplicates, quarantined, failed, attempts, error"
                                   " FROM collection_ledger")
    assert any(row.attempts > 1 for row in ledger), "no step was retried"
    assert any(row.quarantined for row in ledger), "nothing was quarantined"
    for row in ledger:
        if row.status not in ("ok",):
            print(f"  ledger {row.run_id[:8]} {row.exchange} {row.dataset} {row.status}: "
                  f"{row.requested}={row.stored}+{row.duplicates}+{row.quarantined}+{row.failed}"
                  f" ({row.error})")
    # Not asserted (the ledger does not count them): rows stored with an enrichment value left
    # unknown because its auxiliary call (bid/ask, funding interval) failed once.
    unknown = await _scalar(engine, "SELECT 'tickers without bid', exchange, count(*)"
                                    " FROM tickers WHERE bid IS NULL GROUP BY exchange UNION ALL"
                                    " SELECT 'funding rates without interval', exchange, count(*)"
                                    " FROM funding_rates WHERE interval_hours IS NULL"
                                    " GROUP BY exchange")
    print(f"  stored with values left unknown: {unknown}")
    # 0 duplicate keys.
    for table, sql in DUPLICATES.items():
        assert await _scalar(engine, sql) == [], f"duplicate keys in {table}"
    # 0 unaccounted ledger rows.
    unaccounted = [row for row in ledger
                   if row.requested != row.stored + row.duplicates + row.quarantined + row.failed]
    assert unaccounted == []
    # Every run's state agrees with its ledger; every run left a ledger.
    by_run: dict[str, list] = {}
    for row in ledger:
        by_run.setdefault(row.run_id, []).append(row)
    for cycle, flow_name, state in states:
        run_id = str(state.state_details.flow_run_id)
        rows = by_run.get(run_id, [])
        where = f"cycle {cycle} {flow_name} ({state.type.value}: {state.message})"
        assert rows, f"{where}: no ledger row"
        failed = any(row.status == "failed" for row in rows)
        assert state.is_failed() if failed else state.is_completed(), where
    # Every quarantined row has a reason.
    reasonless = await _scalar(engine, "SELECT id FROM quarantine"
                                       " WHERE reason IS NULL OR trim(reason) = ''")
    assert reasonless == []
    # The certificate of the soak's day(s): expected one snapshot per cycle, all explained.
    intervals = {"tickers": SPACING, "funding_rates": SPACING}
    first = min(row.collected_at for row in await _scalar(
        engine, "SELECT min(first_seen) AS collected_at FROM instruments"))
    day, rows = first.date(), []
    while day <= soak_ended.date():
        rows += await compute_certificate(engine, day, intervals,
                                          {name: ("tickers", "funding_rates", "funding_history")
                                           for name in VENUES}, now=soak_ended)
        day += timedelta(days=1)
    for row in rows:
        print(f"  certificate {row['day']} {row['exchange']} {row['dataset']}: expected "
              f"{row['expected']} stored {row['stored']} explained {row['explained']} "
              f"unexplained {row['unexplained']} {row['reasons']} {row['detail'] or ''}")
    assert {(r["exchange"], r["dataset"]) for r in rows} >= {
        (name, dataset) for name in VENUES
        for dataset in ("tickers", "funding_rates", "funding_history")}
    for row in rows:
        if row["dataset"] != "funding_history":
            assert row["expected"] >= CYCLES * row["instruments"] > 0, row
    assert [r for r in rows if r["unexplained"]] == []
