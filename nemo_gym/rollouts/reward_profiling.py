"""A reward profile of a finished collection, computed here from its files (`ng_reward_profile`, NeMo
Gym's `gym eval profile`): no server is asked.

It pairs each rollout row with the materialized input of the same (`_ng_task_index`,
`_ng_rollout_index`) and writes, beside the rollouts:

- `<stem>_reward_profiling.jsonl`: one line per task, `mean/`, `max/`, `min/`, `median/`, `std/` of
  every numeric field (and `response.usage` number) over the task's rollouts, with `sample` (the
  task's input row), `num_rollouts`, `expected_num_rollouts`, `missing_num_rollouts`,
  `reward_profile_completion_pct` and `rollout_infos`;
- `<stem>_agent_metrics.json`: the same statistics over every rollout of each agent, with `agent_ref`.

Rollouts without a materialized input are refused; inputs without a rollout are refused too, unless
`allow_partial` (the run was cut short), which profiles the pairs that finished.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from nemo_gym.errors import InputDataError
from nemo_gym.servers.aggregate_metrics import ROLLOUT_INDEX, TASK_INDEX, describe, numeric_fields, rollout_info

__all__ = ["ProfileSummary", "profile_files", "read_keyed_rows"]

PairKey = tuple[int, int]
SHOWN_KEYS = 10


@dataclass(frozen=True, slots=True)
class ProfileSummary:
    """How complete the profile is, and where it was written."""

    expected_rollouts: int
    profiled_rollouts: int
    tasks: int
    complete_tasks: int
    partial_tasks: int
    tasks_without_rollouts: int
    profile_path: Path
    agent_metrics_path: Path

    @property
    def completion_pct(self) -> float:
        return 100.0 if not self.expected_rollouts else 100.0 * self.profiled_rollouts / self.expected_rollouts


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise InputDataError("file does not exist", path=str(path))
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = orjson.loads(raw)
            except orjson.JSONDecodeError as error:
                raise InputDataError(f"not valid JSON ({error})", path=str(path), line=number) from None
            if not isinstance(row, dict):
                raise InputDataError("expected a JSON object", path=str(path), line=number)
            yield number, row


def read_keyed_rows(path: Path) -> dict[PairKey, dict[str, Any]]:
    """The file's rows by (task, rollout); a row without both indices, or a repeated pair, is an error."""
    rows: dict[PairKey, dict[str, Any]] = {}
    for number, row in _lines(path):
        task, rollout = row.get(TASK_INDEX), row.get(ROLLOUT_INDEX)
        if not all(isinstance(value, int) and not isinstance(value, bool) for value in (task, rollout)):
            raise InputDataError(
                "no integer _ng_task_index and _ng_rollout_index (was it written by ng_collect_rollouts?)",
                path=str(path),
                line=number,
            )
        key = (int(task), int(rollout))  # type: ignore[arg-type]
        if key in rows:
            raise InputDataError(f"a second row for task {key[0]}, rollout {key[1]}", path=str(path), line=number)
        rows[key] = row
    return rows


def _agent_of(task_row: dict[str, Any], result: dict[str, Any]) -> str:
    for row in (task_row, result):
        ref = row.get("agent_ref")
        if isinstance(ref, dict) and isinstance(ref.get("name"), str):
            return str(ref["name"])
    return "unknown"


def _sample(task_row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in task_row.items() if key not in (TASK_INDEX, ROLLOUT_INDEX)}


def profile_files(inputs_path: Path, rollouts_path: Path, *, allow_partial: bool = False) -> ProfileSummary:
    """Profile `rollouts_path` against `inputs_path` and write the two files (see the module docstring)."""
    inputs = read_keyed_rows(inputs_path)
    results = read_keyed_rows(rollouts_path)
    extra = sorted(results.keys() - inputs.keys())
    if extra:
        raise InputDataError(
            f"{len(extra)} rollout(s) have no materialized input in {inputs_path} "
            f"(first (task, rollout) pairs: {extra[:SHOWN_KEYS]}); are these the inputs of this run?",
            path=str(rollouts_path),
        )
    missing = sorted(inputs.keys() - results.keys())
    if missing and not allow_partial:
        raise InputDataError(
            f"{len(missing)} materialized input(s) have no rollout (first (task, rollout) pairs: "
            f"{missing[:SHOWN_KEYS]}); finish the run with +resume=true, or pass +allow_partial_rollouts=true "
            f"to profile the rollouts that finished",
            path=str(rollouts_path),
        )
    expected = Counter(task for task, _ in inputs)
    done = sorted(inputs.keys() & results.keys())
    by_task: dict[int, list[PairKey]] = {}
    for key in done:
        by_task.setdefault(key[0], []).append(key)

    groups = []
    for task, keys in sorted(by_task.items()):
        rows = [results[key] for key in keys]
        group: dict[str, Any] = {TASK_INDEX: task, **describe([numeric_fields(row) for row in rows])}
        group["sample"] = _sample(inputs[keys[0]])
        group["num_rollouts"] = len(keys)
        group["expected_num_rollouts"] = expected[task]
        group["missing_num_rollouts"] = expected[task] - len(keys)
        group["reward_profile_completion_pct"] = 100.0 * len(keys) / expected[task]
        group["rollout_infos"] = [rollout_info(results[key], *key) for key in keys]
        groups.append(group)

    by_agent: dict[str, list[dict[str, float]]] = {}
    for key in done:
        by_agent.setdefault(_agent_of(inputs[key], results[key]), []).append(numeric_fields(results[key]))
    agents = [describe(rows) | {"agent_ref": {"name": agent}} for agent, rows in sorted(by_agent.items())]

    profile_path = rollouts_path.with_name(f"{rollouts_path.stem}_reward_profiling.jsonl")
    agent_metrics_path = rollouts_path.with_name(f"{rollouts_path.stem}_agent_metrics.json")
    profile_path.write_bytes(b"".join(orjson.dumps(group) + b"\n" for group in groups))
    agent_metrics_path.write_bytes(orjson.dumps(agents))
    completed = Counter(task for task, _ in done)
    return ProfileSummary(
        expected_rollouts=len(inputs),
        profiled_rollouts=len(done),
        tasks=len(expected),
        complete_tasks=sum(1 for task, count in expected.items() if completed[task] == count),
        partial_tasks=sum(1 for task, count in expected.items() if 0 < completed[task] < count),
        tasks_without_rollouts=sum(1 for task in expected if completed[task] == 0),
        profile_path=profile_path,
        agent_metrics_path=agent_metrics_path,
    )
