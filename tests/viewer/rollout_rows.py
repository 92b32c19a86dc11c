"""Rollout rows shaped like the collector's output, for viewer and re-verify tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def rollout_row(
    task: int,
    rollout: int,
    reward: float | None,
    *,
    text: str = "It is cold.",
    calls: int = 1,
    tokens: int = 120,
    episode_end: str | None = "completed",
    **extras: Any,
) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    for call in range(calls):
        call_id = f"call_{task}_{rollout}_{call}"
        output.append(
            {
                "type": "function_call",
                "call_id": call_id,
                "name": "get_weather",
                "arguments": json.dumps({"city": f"City{task}"}),
            }
        )
        output.append(
            {
                "type": "function_call_output",
                "call_id": call_id,
                "output": json.dumps({"weather_description": f"cold in City{task}"}),
            }
        )
    output.append({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]})
    row: dict[str, Any] = {
        "responses_create_params": {"input": [{"role": "user", "content": f"weather in City{task}?"}]},
        "response": {
            "output": output,
            "usage": {"input_tokens": tokens - 20, "output_tokens": 20, "total_tokens": tokens},
        },
        "reward": reward,
        "_ng_task_index": task,
        "_ng_rollout_index": rollout,
        **extras,
    }
    if episode_end is not None:
        row["episode_end"] = episode_end
    return row


def write_rows(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
