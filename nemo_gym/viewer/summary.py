"""The few fields of a rollout row the viewer's table shows, read from the row once while indexing.

A row is the environment's verify response (`responses_create_params`, `response`, `reward`,
extras) plus `_ng_task_index` / `_ng_rollout_index`. Everything here tolerates rows from other
writers: a missing field becomes None (shown as "-"), never an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeGuard

NO_ENDING = "-"
"""Shown when a row has no `episode_end` (rows written before agents recorded it)."""


@dataclass(slots=True, frozen=True)
class RowSummary:
    task: int | None
    rollout: int | None
    reward: float | None
    turns: int
    tokens: int | None
    ending: str


def count_turns(output: Any) -> int:
    """Model calls in an episode: each run of model items (messages, reasoning, function calls)
    between tool outputs is one model turn, which is how the agent loop produces them."""
    if not isinstance(output, list):
        return 0
    turns = 0
    in_model_turn = False
    for item in output:
        is_tool_output = isinstance(item, dict) and item.get("type") == "function_call_output"
        if is_tool_output:
            in_model_turn = False
        elif not in_model_turn:
            turns += 1
            in_model_turn = True
    return turns


def total_tokens(usage: Any) -> int | None:
    if not isinstance(usage, dict):
        return None
    total = usage.get("total_tokens")
    if _is_int(total):
        return total
    given, produced = usage.get("input_tokens"), usage.get("output_tokens")
    return given + produced if _is_int(given) and _is_int(produced) else None


def summarize(row: Any) -> RowSummary:
    if not isinstance(row, dict):
        return RowSummary(None, None, None, 0, None, NO_ENDING)
    response: dict[str, Any] = row["response"] if isinstance(row.get("response"), dict) else {}
    raw_reward = row.get("reward")
    reward = float(raw_reward) if _is_number(raw_reward) and math.isfinite(raw_reward) else None
    ending = row.get("episode_end")
    return RowSummary(
        task=row.get("_ng_task_index") if _is_int(row.get("_ng_task_index")) else None,
        rollout=row.get("_ng_rollout_index") if _is_int(row.get("_ng_rollout_index")) else None,
        reward=reward,
        turns=count_turns(response.get("output")),
        tokens=total_tokens(response.get("usage")),
        ending=ending if isinstance(ending, str) and ending else NO_ENDING,
    )


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
