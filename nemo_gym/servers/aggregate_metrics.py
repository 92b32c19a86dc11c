"""`POST /aggregate_metrics`: the metrics of a whole collection, computed by the environment that scored it.

At the end of a collection the collector posts every verify response it wrote (heavy fields
stripped, `response.usage` kept) and writes the answer to `<stem>_aggregate_metrics.json`. The
answer has NeMo Gym's shape and key names, so dashboards and `get_key_metrics` overrides written
against NeMo Gym read it unchanged:

- `group_level_metrics`: one dict per task (sorted by `_ng_task_index`): `mean/<field>`,
  `max/...`, `min/...`, `median/...`, `std/...` over the task's rollouts for every numeric
  top-level field of the rows and of `response.usage` (bools count 0/1), plus `num_rollouts`,
  `expected_num_rollouts`, `missing_num_rollouts`, `reward_profile_completion_pct`,
  `rollout_infos` (one small dict per rollout) and `sample` (the task's first row, indices removed);
- `agent_metrics`: the same five statistics over every rollout, with the environment's
  `compute_metrics(tasks)` merged in (a `per_task_metrics` list it returns goes to the groups);
- `key_metrics`: the environment's `get_key_metrics(agent_metrics)`, by default every `mean/...`.

`std` is the sample standard deviation; a field seen once in a group has none, except that when no
field of the group has one (a task with one rollout), fields present in every row get 0, as in
NeMo Gym. NeMo Gym's histograms are not computed (they are dropped before serialising there too).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

from pydantic import BaseModel, Field

TASK_INDEX = "_ng_task_index"
ROLLOUT_INDEX = "_ng_rollout_index"
STATISTICS = ("mean", "max", "min", "median", "std")

ComputeMetrics = Callable[[list[list[dict[str, Any]]]], dict[str, Any]]
GetKeyMetrics = Callable[[dict[str, Any]], dict[str, Any]]


class AggregateMetricsRequest(BaseModel):
    """Body of `POST /aggregate_metrics`: verify responses, each with at least `_ng_task_index` and `reward`."""

    verify_responses: list[dict[str, Any]]


class AggregateMetrics(BaseModel):
    """Answer of `/aggregate_metrics`, flat string keys throughout."""

    group_level_metrics: list[dict[str, Any]] = Field(default_factory=list)
    """One dict of metrics per task."""
    agent_metrics: dict[str, Any] = Field(default_factory=dict)
    """Metrics over all rollouts (the environment's `compute_metrics` merged in)."""
    key_metrics: dict[str, Any] = Field(default_factory=dict)
    """The headline subset (the environment's `get_key_metrics`)."""


def default_key_metrics(agent_metrics: dict[str, Any], leave_out: Collection[str] = ()) -> dict[str, Any]:
    """Every `mean/...` entry: the headline metrics of an environment that does not choose its own.
    `leave_out`: field names whose mean is no outcome (the task's own fields, see `task_field_names`)."""
    dropped = {f"mean/{name}" for name in leave_out}
    return {key: value for key, value in agent_metrics.items() if key.startswith("mean/") and key not in dropped}


def task_field_names(verify_responses: list[dict[str, Any]], outcomes: Collection[str]) -> frozenset[str]:
    """The rows' top-level fields that are not `outcomes` (what verify adds): fields of the task the row
    echoes (`expected_answer`, `max_guesses`). `response.usage` is the rollout's own, so it is no task field."""
    names = {name for row in verify_responses for name in row}
    return frozenset(names - set(outcomes) - {"response", TASK_INDEX, ROLLOUT_INDEX})


def _numbers(mapping: Mapping[str, Any], into: dict[str, float]) -> None:
    for key, value in mapping.items():
        if isinstance(value, bool):
            into[key] = int(value)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            into[key] = value


def numeric_fields(row: Mapping[str, Any]) -> dict[str, float]:
    """The row's numeric top-level fields and its `response.usage` numbers (NeMo Gym lays usage over the row)."""
    fields: dict[str, float] = {}
    usage = (row.get("response") or {}).get("usage") if isinstance(row.get("response"), Mapping) else None
    merged = dict(row)
    if isinstance(usage, Mapping):
        merged.update(usage)
    _numbers(merged, fields)
    fields.pop(TASK_INDEX, None)
    fields.pop(ROLLOUT_INDEX, None)
    return fields


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def describe(rows: list[dict[str, float]]) -> dict[str, float]:
    """`<statistic>/<field>` over the rows, in NeMo Gym's key order (statistic-major)."""
    names = list(dict.fromkeys(name for row in rows for name in row))
    columns = {name: [row[name] for row in rows if name in row] for name in names}
    spreads: dict[str, float | None] = {}
    for name, values in columns.items():
        if len(values) >= 2:
            centre = sum(values) / len(values)
            spreads[name] = math.sqrt(sum((v - centre) ** 2 for v in values) / (len(values) - 1))
        else:
            spreads[name] = None
    if all(spread is None for spread in spreads.values()):
        spreads = {name: 0.0 if len(columns[name]) == len(rows) else None for name in names}
    described: dict[str, float] = {}
    for statistic in STATISTICS:
        for name, values in columns.items():
            if statistic == "mean":
                described[f"mean/{name}"] = sum(values) / len(values)
            elif statistic == "max":
                described[f"max/{name}"] = max(values)
            elif statistic == "min":
                described[f"min/{name}"] = min(values)
            elif statistic == "median":
                described[f"median/{name}"] = _median(values)
            elif (spread := spreads[name]) is not None:
                described[f"std/{name}"] = spread
    return described


def rollout_info(row: Mapping[str, Any], task: int, rollout: int) -> dict[str, Any]:
    info: dict[str, Any] = {"rollout_id": f"{task}:{rollout}", TASK_INDEX: task, ROLLOUT_INDEX: rollout}
    if "reward" in row:
        info["reward"] = row["reward"]
    usage = row.get("response", {}).get("usage") if isinstance(row.get("response"), Mapping) else None
    numbers: dict[str, float] = {}
    if isinstance(usage, Mapping):
        _numbers(usage, numbers)
    _numbers({k: v for k, v in row.items() if k not in (TASK_INDEX, ROLLOUT_INDEX, "reward", "response")}, numbers)
    return info | numbers


def group_by_task(verify_responses: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The rows as `compute_metrics` takes them: `tasks[i]` = the rollouts of the i-th task by index."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for row in verify_responses:
        groups.setdefault(row.get(TASK_INDEX, 0), []).append(row)
    return [groups[index] for index in sorted(groups)]


def compute_aggregate_metrics(
    verify_responses: list[dict[str, Any]],
    compute_metrics_fn: ComputeMetrics | None = None,
    get_key_metrics_fn: GetKeyMetrics | None = None,
) -> AggregateMetrics:
    """The answer of `/aggregate_metrics` for these rows (see the module docstring)."""
    if not verify_responses:
        return AggregateMetrics()
    groups: list[dict[str, Any]] = []
    for rollouts in group_by_task(verify_responses):
        task = rollouts[0].get(TASK_INDEX, 0)
        ordered = sorted(rollouts, key=lambda row: row.get(ROLLOUT_INDEX, 0))
        group: dict[str, Any] = {TASK_INDEX: task, **describe([numeric_fields(row) for row in ordered])}
        sample = {k: v for k, v in ordered[0].items() if k not in (TASK_INDEX, ROLLOUT_INDEX)}
        group["sample"] = sample
        group["num_rollouts"] = group["expected_num_rollouts"] = len(ordered)
        group["missing_num_rollouts"] = 0
        group["reward_profile_completion_pct"] = 100.0
        group["rollout_infos"] = [rollout_info(row, task, row.get(ROLLOUT_INDEX, 0)) for row in ordered]
        groups.append(group)

    agent_metrics: dict[str, Any] = describe([numeric_fields(row) for row in verify_responses])
    if compute_metrics_fn is not None:
        custom = dict(compute_metrics_fn(group_by_task(verify_responses)))
        per_task = {entry[TASK_INDEX]: entry for entry in custom.pop("per_task_metrics", None) or []}
        for group in groups:
            extra = per_task.get(group[TASK_INDEX])
            if extra:
                group.update({k: v for k, v in extra.items() if k != TASK_INDEX})
        agent_metrics.update(custom)
    key_metrics = (get_key_metrics_fn or default_key_metrics)(agent_metrics)
    return AggregateMetrics(group_level_metrics=groups, agent_metrics=agent_metrics, key_metrics=key_metrics)


__all__ = [
    "AggregateMetrics",
    "AggregateMetricsRequest",
    "compute_aggregate_metrics",
    "default_key_metrics",
    "describe",
    "group_by_task",
    "numeric_fields",
    "rollout_info",
    "task_field_names",
]
