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
from nemo_gym.errors import NemoGymError
from nemo_gym.rollouts.store import aggregate_metrics_path
from nemo_gym.servers.aggregate_metrics import AggregateMetrics

__all__ = [
    "AggregateMetricsOutcome",
    "aggregate_metrics_path",
    "format_environment_key_metrics",
    "strip_for_aggregation",
    "write_aggregate_metrics",
]

_HEAVY_FIELDS = ("response", "responses_create_params")


@dataclass(slots=True)
class AggregateMetricsOutcome:
    """What the end-of-run calls to `/aggregate_metrics` gave."""

    path: Path | None = None
    """The file written, or None (no agent answered, or it could not be written)."""
    key_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each answering agent's `key_metrics`, by agent name."""
    errors: list[str] = field(default_factory=list)
    """One line per agent whose call failed (or for the write); an agent without the route is not one."""


def strip_for_aggregation(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row without the request and the response, except the response's `usage` (token metrics)."""
    entry = {key: value for key, value in row.items() if key not in _HEAVY_FIELDS}
    response = row.get("response")
    usage = response.get("usage") if isinstance(response, Mapping) else None
    if usage:
        entry["response"] = {"usage": usage}
    return entry


def _rows_by_agent(rows: Iterable[Mapping[str, Any]], default_agent: str | None) -> dict[str, list[orjson.Fragment]]:
    """Stripped rows grouped by the agent that ran them (their `agent_ref`, else `default_agent`), as
    NeMo Gym groups them; rows naming no agent are left out. Each row is kept as its JSON bytes: at 16k
    rows the dicts were most of what a collection held at its end."""
    grouped: dict[str, list[orjson.Fragment]] = {}
    for row in rows:
        ref = row.get("agent_ref")
        name = ref.get("name") if isinstance(ref, Mapping) else None
        agent = name if isinstance(name, str) else default_agent
        if agent is not None:
            # An exact-size copy: orjson hands back its whole write buffer (4 KiB for a small row).
            encoded = memoryview(orjson.dumps(strip_for_aggregation(row))).tobytes()
            grouped.setdefault(agent, []).append(orjson.Fragment(encoded))
    return grouped


def _checked_answer(answer: Any) -> dict[str, Any]:
    """The answer as the file holds it (`AggregateMetrics`' fields, their defaults filled in), checked
    without building the model: an answer is as large as the rows (a sample row per task), and a model
    plus its dump were two more copies of it at the collection's memory peak."""
    if not isinstance(answer, dict):
        raise ValueError(f"the answer is a {type(answer).__name__}, not an object")
    checked: dict[str, Any] = {}
    for name, info in AggregateMetrics.model_fields.items():
        value = answer.get(name)
        if value is None:
            value = info.get_default(call_default_factory=True)
        kind = list if name == "group_level_metrics" else dict
        if not isinstance(value, kind) or (kind is list and not all(isinstance(entry, dict) for entry in value)):
            raise ValueError(f"`{name}` of the answer is not {'a list of objects' if kind is list else 'an object'}")
        if any(not isinstance(key, str) for key in (value if kind is dict else ())):
            raise ValueError(f"`{name}` of the answer has a key that is not a string")
        checked[name] = value
    return checked


async def _ask(server_client: ServerClient, agent: str, rows: list[orjson.Fragment]) -> dict[str, Any] | None:
    """The agent's answer (see `_checked_answer`); None when it has no `/aggregate_metrics` (404)."""
    answer = await server_client.post(
        agent, "/aggregate_metrics", json={"verify_responses": rows}, retry=CONNECT_ONLY_RETRY
    )
    if answer.status == 404:
        return None
    return _checked_answer(answer.raise_for_status().json())


async def write_aggregate_metrics(
    server_client: ServerClient,
    rows: Iterable[Mapping[str, Any]],
    output_path: Path,
    *,
    default_agent: str | None = None,
) -> AggregateMetricsOutcome:
    """Post each agent's rows to its `/aggregate_metrics` and write the answers beside `output_path`."""
    grouped = await asyncio.to_thread(_rows_by_agent, rows, default_agent)  # reads the rows file
    outcome = AggregateMetricsOutcome()
    entries = []
    for agent in sorted(grouped):
        try:
            metrics = await _ask(server_client, agent, grouped.pop(agent))  # each agent's rows freed once sent
        except (NemoGymError, ValueError) as error:  # an error status, a dead server, an answer of the wrong shape
            outcome.errors.append(f"aggregate metrics of {agent} not computed: {error}")
            continue
        if metrics is None:
            continue  # an agent or environment that does not offer the route
        entries.append({"agent_ref": {"name": agent}, **metrics})
        outcome.key_metrics[agent] = metrics["key_metrics"]
    if not entries:
        return outcome
    target = aggregate_metrics_path(output_path)
    temporary = target.with_name(target.name + ".tmp")
    try:
        temporary.write_bytes(orjson.dumps(entries, option=orjson.OPT_INDENT_2))
        os.replace(temporary, target)
    except (OSError, TypeError) as error:
        outcome.errors.append(f"aggregate metrics not written to {target}: {error}")
        return outcome
    outcome.path = target
    return outcome


def format_environment_key_metrics(key_metrics: Mapping[str, Any]) -> str:
    """One line: `name value` pairs, numbers to 4 significant digits, anything else as JSON."""
    if not key_metrics:
        return "(none)"
    parts = []
    for name, value in key_metrics.items():
        shown = f"{value:.4g}" if isinstance(value, float) else orjson.dumps(value).decode()
        parts.append(f"{name} {shown}")
    return "  ".join(parts)
