"""Reading a flow run's artifacts back from the test Prefect API."""

from __future__ import annotations

import json
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import Artifact


async def run_artifacts(flow_run_id) -> dict[str, Artifact]:
    """``{key: artifact}`` of the keyed artifacts one flow run published (the newest per key).

    (POST /artifacts/filter directly: the 3.8 client sends null sub-filters the server refuses.)
    """
    async with get_client() as client:
        response = await client.request(
            "POST",
            "/artifacts/filter",
            json={
                "artifacts": {"flow_run_id": {"any_": [str(flow_run_id)]}},
                "sort": "CREATED_DESC",
                "limit": 200,
            },
        )
    found = Artifact.model_validate_list(response.json())
    return {artifact.key: artifact for artifact in reversed(found) if artifact.key}


def table(artifact: Artifact) -> list[dict[str, Any]]:
    """The rows of a table artifact."""
    return json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
