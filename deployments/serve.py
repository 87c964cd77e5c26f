"""Serve every deployment of ``prefect.yaml`` from this one process (no work pool, no worker).

``python -m deployments.serve`` registers the same deployments as ``prefect deploy --all`` (names,
schedules, parameters, tags, descriptions, concurrency limits), runs their scheduled and
triggered runs as subprocesses of this process, and leaves the schedules active when it stops, so
that a restart picks up where it left off. Blocks, pool and rate limits come from
``python -m deployments.setup`` (run it once first).
"""

from __future__ import annotations

import argparse
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig
from prefect.deployments.runner import RunnerDeployment
from prefect.flows import load_flow_from_entrypoint
from prefect.schedules import Schedule

from deployments.steps import PREFECT_YAML, PROJECT_ROOT

SCHEDULE_KEYS = {"cron", "interval", "rrule", "timezone", "day_or", "active", "parameters", "slug"}


def schedule(spec: dict[str, Any]) -> Schedule:
    """A ``prefect.yaml`` schedule item as a schedule object (``interval`` in seconds).

    Raises ``ValueError`` naming the key for keys a served schedule does not take."""
    unknown = set(spec) - SCHEDULE_KEYS
    if unknown:
        raise ValueError(f"schedules: unsupported key(s) {sorted(unknown)} in {spec!r}")
    values = dict(spec)
    if "interval" in values:
        values["interval"] = timedelta(seconds=float(values["interval"]))
    return Schedule(**values)


def concurrency(spec: int | dict[str, Any] | None) -> int | ConcurrencyLimitConfig | None:
    """A ``concurrency_limit`` entry (a number, or ``limit`` + ``collision_strategy``)."""
    if spec is None or isinstance(spec, int):
        return spec
    return ConcurrencyLimitConfig(**spec)


def load_deployments(path: Path = PREFECT_YAML) -> list[RunnerDeployment]:
    """The deployments declared in ``path`` as served deployments (entrypoints relative to the
    project root; work pool and pull steps do not apply to a served flow)."""
    spec = yaml.safe_load(path.read_text())
    deployments = []
    for item in spec.get("deployments") or []:
        flow = load_flow_from_entrypoint(str(PROJECT_ROOT / item["entrypoint"]))
        deployments.append(
            flow.to_deployment(
                name=item["name"],
                description=item.get("description"),
                schedules=[schedule(s) for s in item.get("schedules") or []],
                parameters=item.get("parameters") or {},
                tags=item.get("tags") or [],
                concurrency_limit=concurrency(item.get("concurrency_limit")),
                version=item.get("version"),
            )
        )
    return deployments


def main(argv: list[str] | None = None) -> None:
    """Entry point: serve until interrupted (SIGINT/SIGTERM)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="flow runs at once (default: any)")
    args = parser.parse_args(argv)
    os.chdir(PROJECT_ROOT)  # served runs start here, as they do on workers
    serve(*load_deployments(), pause_on_shutdown=False, limit=args.limit)


if __name__ == "__main__":
    main()
