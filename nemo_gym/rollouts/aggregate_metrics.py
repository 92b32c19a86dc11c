"""The environment's own metrics of a collection: `<stem>_aggregate_metrics.json`, as NeMo Gym writes it.

At the end of a collection the rows of the job are posted to the agent's `/aggregate_metrics` (the
simple agent asks its resources server, whose `compute_metrics` / `get_key_metrics` know the
environment; see `nemo_gym.servers.aggregate_metrics`), stripped as NeMo Gym strips them (no
`responses_create_params`, `response` reduced to its `usage`). The answer is written beside the
output as a list with one entry per agent, `{agent_ref, agent_metrics, key_metrics,
group_level_metrics}`, NeMo Gym's file shape.

This is an extra, never a risk to the rollouts: an agent (or resources server) without the route
(404) is skipped silently, and any other failure becomes one line in `AggregateMetricsOutcome.error`;
the rows, the failures file and our own metrics file are already written by then.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from nemo_gym.client import CONNECT_ONLY_RETRY, ServerClient
from nemo_gym.errors import HTTPStatusError, NemoGymError
from nemo_gym.servers.aggregate_metrics import AggregateMetrics

__all__ = [
    "AggregateMetricsOutcome",
    "aggregate_metrics_path",
    "format_environment_key_metrics",
    "strip_for_aggregation",
    "write_aggregate_metrics",
]

_HEAVY_FIELDS = ("response", "responses_create_params")


def aggregate_metrics_path(output_path: Path) -> Path:
    """`results/run.jsonl` -> `results/run_aggregate_metrics.json` (NeMo Gym's name)."""
    return output_path.with_name(f"{output_path.stem}_aggregate_metrics.json")


@dataclass(slots=True)
class AggregateMetricsOutcome:
    """What the end-of-run call to `/aggregate_metrics` gave."""

    path: Path | None = None
    """The file written, or None (skipped or failed)."""
    key_metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    """One line when the call or the write failed; None when it worked or the route does not exist."""


def strip_for_aggregation(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row without the request and the response, except the response's `usage` (token metrics)."""
    entry = {key: value for key, value in row.items() if key not in _HEAVY_FIELDS}
    response = row.get("response")
    usage = response.get("usage") if isinstance(response, Mapping) else None
    if usage:
        entry["response"] = {"usage": usage}
    return entry


async def write_aggregate_metrics(
    server_client: ServerClient, agent_name: str, rows: Iterable[Mapping[str, Any]], output_path: Path
) -> AggregateMetricsOutcome:
    """Post the rows to `agent_name`'s `/aggregate_metrics` and write the answer beside `output_path`."""
    stripped = await asyncio.to_thread(lambda: [strip_for_aggregation(row) for row in rows])  # reads the file
    if not stripped:
        return AggregateMetricsOutcome()
    target = aggregate_metrics_path(output_path)
    try:
        answer = await server_client.post(
            agent_name, "/aggregate_metrics", json={"verify_responses": stripped}, retry=CONNECT_ONLY_RETRY
        )
        if answer.status == 404:
            return AggregateMetricsOutcome()  # an agent or environment that does not offer the route
        metrics = AggregateMetrics.model_validate(answer.raise_for_status().json())
        entry = {"agent_ref": {"name": agent_name}, **metrics.model_dump(mode="json")}
        temporary = target.with_name(target.name + ".tmp")
        temporary.write_bytes(orjson.dumps([entry], option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        os.replace(temporary, target)
    except HTTPStatusError as error:
        return AggregateMetricsOutcome(error=f"aggregate metrics not written: {error}")
    except (NemoGymError, ValueError, TypeError, OSError) as error:
        return AggregateMetricsOutcome(error=f"aggregate metrics not written to {target}: {error}")
    return AggregateMetricsOutcome(target, metrics.key_metrics)


def format_environment_key_metrics(key_metrics: Mapping[str, Any]) -> str:
    """One line: `name value` pairs, numbers to 4 significant digits, anything else as JSON."""
    if not key_metrics:
        return "(none)"
    parts = []
    for name, value in key_metrics.items():
        shown = f"{value:.4g}" if isinstance(value, float) else orjson.dumps(value).decode()
        parts.append(f"{name} {shown}")
    return "  ".join(parts)
