"""Deployments end to end, real processes on 127.0.0.1: `prefect server start` (SQLite, temporary
PREFECT_HOME), `python -m deployments.setup` (twice), `prefect deploy --all`, two process workers,
`prefect deployment run` against the exchange emulator; then `python -m deployments.serve`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import AutomationSort
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings

from perpflow.emulator import EmulatorServer, GeneratedVenue
from perpflow.store import funding_history, funding_rates, tickers
from tasks.exchange import rate_limit_name
from tests.conftest import ROOT
from tests.test_automations import NAMES as ALERTS
from tests.test_flows import fetch_all

VENUES = ("binanceusdm", "bybit", "okx")
SYMBOLS = 12  # history paging alone sends 12 requests at once per venue when ungated
RATE_LIMIT_MS = 250  # 4 requests per second per venue, across all workers
BUDGET = 1000 / RATE_LIMIT_MS
# Every deployment of prefect.yaml with its cadence (seconds); the collectors also take the venues.
DEPLOYMENTS = {
    "collect-tickers/default": 60,
    "sweep-funding-rates/default": 300,
    "check-data-quality/default": 3600,
    "report-health/default": 900,
    "maintain-database/default": 86400,
    "run-benchmarks/default": 604800,
    "certify-completeness/default": "15 0 * * *",  # daily at 00:15 UTC, the previous day
}
COLLECTORS = ("collect-tickers/default", "sweep-funding-rates/default")
# The least database role each job needs (sql/roles.sql; one block per role).
ROLE_OF = {
    "collect-tickers/default": "market-data-collector",
    "sweep-funding-rates/default": "market-data-collector",
    "maintain-database/default": "market-data-maintainer",
}
DATABASE_BLOCKS = {"market-data", "market-data-collector", "market-data-reader",
                   "market-data-maintainer"}


def expected_parameters(name: str) -> dict:
    database = ROLE_OF.get(name, "market-data-reader")
    if name in COLLECTORS or name == "certify-completeness/default":
        return {"exchanges": list(VENUES), "database": database}
    return {"database": database}


def expected_tags(name: str) -> set[str]:
    job = name.split("/")[0]
    return {job, "venues:default"} if name in COLLECTORS else {job}


def assert_schedule(schedule, cadence: int | str, name: str) -> None:
    """An interval schedule of ``cadence`` seconds, or a cron schedule ``cadence`` in UTC."""
    assert schedule.active, name
    if isinstance(cadence, str):
        assert (schedule.schedule.cron, schedule.schedule.timezone) == (cadence, "UTC"), name
    else:
        assert schedule.schedule.interval == timedelta(seconds=cadence), name


def test_role_blocks_take_role_urls_else_the_database_url(monkeypatch):
    from deployments.setup import ROLE_BLOCKS, database_url_for
    from perpflow.settings import load_settings

    monkeypatch.setenv("PERPFLOW_DATABASE_URL", "sqlite+aiosqlite:///data/one.sqlite")
    settings = load_settings()
    assert {database_url_for(settings, name).get_secret_value()
            for name in DATABASE_BLOCKS} == {"sqlite+aiosqlite:///data/one.sqlite"}
    reader = "postgresql+asyncpg://reader:pw@db:5432/perpflow"
    monkeypatch.setenv("PERPFLOW_READER_DATABASE_URL", reader)
    settings = load_settings()
    assert database_url_for(settings, "market-data-reader").get_secret_value() == reader
    assert database_url_for(settings, "market-data-collector").get_secret_value() == (
        "sqlite+aiosqlite:///data/one.sqlite")
    assert set(ROLE_BLOCKS) == DATABASE_BLOCKS - {"market-data"}
BIN = Path(sys.executable).parent
WAIT_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """A child process in its own session, output to a log file, stopped with its children."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path):
        self.name, self.log = name, logs / f"{name}.log"
        self.popen = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return f"--- last lines of {self.name} ---\n" + "\n".join(self.output().splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)


def wait_until(check: Callable[[], object], what: str, processes=(), timeout: float = WAIT_S):
    """``check()``'s first truthy value, polling; fails naming ``what`` with the processes' logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        for process in processes:
            if process.popen.poll() is not None:
                pytest.fail(f"{process.name} exited ({process.popen.returncode}) while waiting for "
                            f"{what}\n{process.tail()}")
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n"
                + "\n".join(p.tail() for p in processes))


def run_cli(env: dict[str, str], *args: str, timeout: float = WAIT_S) -> str:
    """Run a command from the repository root; its output, or a failure showing it."""
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def api(env: dict[str, str], call):
    """Run ``call(client)`` against the test server with a fresh client."""
    async def go():
        with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
            async with get_client() as client:
                return await call(client)
    return asyncio.run(go())


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[dict]:
    """A Prefect server, the emulator (three venues) and the setup's environment."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "PERPFLOW_"))
    }
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PREFECT_HOME=str(home),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="1",
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_RUNNER_POLL_FREQUENCY="1",
        PREFECT_LOGGING_LEVEL="INFO",
    )
    venues = [GeneratedVenue(name, symbols=SYMBOLS, seed=5) for name in VENUES]
    processes: list[Process] = []
    with EmulatorServer(venues).running_in_thread() as emulator:
        database_url = f"sqlite+aiosqlite:///{home / 'market.sqlite'}"
        setup_env = dict(env)
        setup_env["PERPFLOW_DATABASE_URL"] = database_url
        setup_env["PERPFLOW_EXCHANGES"] = json.dumps([
            {"id": name, "api_url": emulator.venue_base_url(name),
             "ccxt_config": {"rateLimit": RATE_LIMIT_MS, "enableRateLimit": False}}
            for name in VENUES
        ])
        server = Process("prefect-server", [str(BIN / "prefect"), "server", "start", "--host",
                                             "127.0.0.1", "--port", str(port)], env, home)
        processes.append(server)

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"{env['PREFECT_API_URL']}/health", timeout=2) as answer:
                    return answer.status == 200
            except OSError:
                return False

        try:
            wait_until(healthy, "the Prefect server to answer", [server])
            yield {"env": env, "setup_env": setup_env, "emulator": emulator, "home": home,
                   "database_url": database_url, "processes": processes}
        finally:
            for process in reversed(processes):
                process.stop()


def start(stack: dict, name: str, *args: str, env: dict | None = None) -> Process:
    process = Process(name, list(args), env or stack["env"], stack["home"])
    stack["processes"].append(process)
    return process


def snapshot(client_env: dict) -> dict:
    async def read(client):
        pools = [pool.name for pool in await client.read_work_pools()]
        blocks = sorted((b.block_type.slug, b.name) for b in await client.read_block_documents())
        limits = sorted(
            (limit.name, limit.limit, limit.slot_decay_per_second)
            for limit in await client.read_global_concurrency_limits(limit=200, offset=0)
        )
        automations = sorted(
            (a.name, a.id)
            for a in await client.read_automations(sort=AutomationSort.NAME_ASC, limit=200)
        )
        return {"pools": pools, "blocks": blocks, "limits": limits, "automations": automations}
    return api(client_env, read)


def flow_run_id(output: str) -> UUID:
    match = re.search(r"UUID: ([0-9a-f-]{36})", output)
    assert match, f"no flow run id in:\n{output}"
    return UUID(match.group(1))


def final_state(env: dict, run_id: UUID, processes) -> object:
    def done():
        run = api(env, lambda client: client.read_flow_run(run_id))
        return run if run.state and run.state.is_final() else None
    return wait_until(done, f"flow run {run_id} to finish", processes)


def test_setup_deploy_and_two_workers(stack):
    env, setup_env, emulator = stack["env"], stack["setup_env"], stack["emulator"]
    # With a webhook URL, setup also creates the alert block and the automations.
    setup_env = {**setup_env, "PERPFLOW_ALERT_WEBHOOK_URL": "http://127.0.0.1:9/perpflow-alerts"}

    # Setup twice: the second run creates nothing new.
    first = run_cli(setup_env, str(BIN / "python"), "-m", "deployments.setup")
    after_first = snapshot(env)
    second = run_cli(setup_env, str(BIN / "python"), "-m", "deployments.setup")
    assert snapshot(env) == after_first
    assert "created" in first and "created" not in second, second
    assert after_first["pools"] == ["perpflow"]
    assert set(after_first["blocks"]) == {("perpflow-exchange", name) for name in VENUES} | {
        ("perpflow-market-database", name) for name in DATABASE_BLOCKS} | {
        ("custom-webhook", "perpflow-alerts")}
    assert [name for name, _ in after_first["automations"]] == sorted(ALERTS)
    assert after_first["limits"] == sorted(
        (rate_limit_name(name), int(BUDGET), BUDGET) for name in VENUES)

    run_cli(env, str(BIN / "prefect"), "--no-prompt", "deploy", "--all")

    async def read_deployments(client):
        return {name: await client.read_deployment_by_name(name) for name in DEPLOYMENTS}
    deployments = api(env, read_deployments)
    for name, seconds in DEPLOYMENTS.items():
        deployment = deployments[name]
        (schedule,) = deployment.schedules
        assert_schedule(schedule, seconds, name)
        assert deployment.work_pool_name == "perpflow"
        assert deployment.parameters == expected_parameters(name)
        assert set(deployment.tags) == expected_tags(name)
        assert deployment.global_concurrency_limit.limit == 1
        assert deployment.concurrency_options.collision_strategy == "CANCEL_NEW"

    def upcoming():
        async def read(client):
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(
                    id=DeploymentFilterId(any_=[d.id for d in deployments.values()])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))),
            )
            return {run.deployment_id for run in runs}
        return api(env, read) == {d.id for d in deployments.values()}
    wait_until(upcoming, "scheduled runs of every deployment", stack["processes"])

    # Keep the scheduler out of the measured runs (a collector's overlapping run is cancelled).
    async def pause(client):
        for deployment in deployments.values():
            await client.pause_deployment(deployment.id)
            for run in await client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))):
                if run.state and run.state.is_scheduled():
                    await client.delete_flow_run(run.id)
    api(env, pause)

    workers = [
        start(stack, f"worker-{n}", str(BIN / "prefect"), "worker", "start", "--pool", "perpflow",
              "--type", "process", "--limit", "1", "--name", f"worker-{n}")
        for n in (1, 2)
    ]
    emulator.requests.clear()
    runs = {
        name: flow_run_id(run_cli(env, str(BIN / "prefect"), "deployment", "run", name))
        for name in COLLECTORS
    }
    states = {name: final_state(env, run_id, stack["processes"]) for name, run_id in runs.items()}
    for name, run in states.items():
        assert run.state.is_completed(), f"{name}: {run.state}\n" + "\n".join(w.tail() for w in workers)

    # One run on each worker (each takes one run at a time); a run's process logs its URL.
    picked = {str(run_id): [w.name for w in workers if re.search(f"View at .*{run_id}", w.output())]
              for run_id in runs.values()}
    assert sorted(sum(picked.values(), [])) == ["worker-1", "worker-2"], picked

    stored = {table.name: await_rows(stack["database_url"], table)
              for table in (tickers, funding_rates, funding_history)}
    for table, rows in stored.items():
        assert {row.exchange for row in rows} == set(VENUES), table
        assert all(len([r for r in rows if r.exchange == v]) >= SYMBOLS for v in VENUES), table
    assert all(run_id_ok(rows, runs) for rows in stored.values())

    # Both runs hit every venue at once; their requests together stay within the venue's budget:
    # in any second at most the burst (one second of budget) plus what decays in that second.
    for venue in VENUES:
        stamps = sorted(record.monotonic for record in emulator.requests.records(venue))
        assert len(stamps) > 2 * BUDGET, (venue, len(stamps))
        busiest = max(sum(1 for t in stamps if start <= t < start + 1) for start in stamps)
        assert busiest <= 2 * BUDGET, (venue, busiest, stamps)


def await_rows(url: str, table):
    return asyncio.run(fetch_all(url, table))


def run_id_ok(rows, runs) -> bool:
    return {row.run_id for row in rows} <= {str(run_id) for run_id in runs.values()}


def test_serve_registers_every_deployment_and_runs_a_triggered_run(stack):
    env = stack["env"]
    # Serving replaces the pool's workers: stop them and remove the pool's deployments first.
    for process in stack["processes"]:
        if process.name.startswith("worker-"):
            process.stop()
    for name in DEPLOYMENTS:
        run_cli(env, str(BIN / "prefect"), "deployment", "delete", name)
    started = datetime.now(UTC)
    served = start(stack, "serve", str(BIN / "python"), "-m", "deployments.serve")

    def registered():
        async def read(client):
            return [await client.read_deployment_by_name(name) for name in DEPLOYMENTS]
        try:
            deployments = api(env, read)
        except ObjectNotFound:
            return None
        return deployments if all(d.updated >= started for d in deployments) else None
    deployments = wait_until(registered, "serve to register the deployments", [served])
    for deployment, (name, seconds) in zip(deployments, DEPLOYMENTS.items(), strict=True):
        (schedule,) = deployment.schedules
        assert_schedule(schedule, seconds, name)
        assert not deployment.paused, name
        assert deployment.parameters == expected_parameters(name)
        assert deployment.global_concurrency_limit.limit == 1

    run_id = flow_run_id(run_cli(env, str(BIN / "prefect"), "deployment", "run",
                                 "sweep-funding-rates/default"))
    run = final_state(env, run_id, [served])
    assert run.state.is_completed(), f"{run.state}\n{served.tail()}"
    assert str(run_id) in served.output()
