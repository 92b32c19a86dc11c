"""Rollout rows cut from one real token sequence: three model calls, two tool results between them."""

from __future__ import annotations

import copy
from typing import Any

# One episode as a chat template lays it out (Qwen-style ids): system + user prompt, a tool call, the
# tool's answer, a second tool call, its answer, and the final message. Boundaries below mark who wrote what.
FULL_SEQUENCE = [151644, 8948, 198, 2610, 525, 10950, 13, 151645, 198, 151644, 872, 198, 3838, 374, 279, 9104]
FULL_SEQUENCE += [30, 151645, 198, 151644, 77091, 198]  # ...end of prompt 1 (22 tokens)
FULL_SEQUENCE += [151657, 5765, 788, 330, 9104, 151658, 151645]  # generation 1: tool call (7)
FULL_SEQUENCE += [198, 151644, 872, 198, 151665, 220, 17, 15, 151666, 151645, 198, 151644, 77091, 198]  # tool 1 (14)
FULL_SEQUENCE += [151657, 5765, 788, 330, 34, 151658, 151645]  # generation 2: second tool call (7)
FULL_SEQUENCE += [198, 151644, 872, 198, 151665, 220, 19, 151666, 151645, 198, 151644, 77091, 198]  # tool 2 (13)
FULL_SEQUENCE += [785, 9104, 374, 220, 17, 15, 13, 151645]  # generation 3: the answer (8)

BOUNDARIES = [(22, 29), (43, 50), (63, 71)]  # (generation start, generation end) per model call
MODEL_POSITIONS = {position for start, end in BOUNDARIES for position in range(start, end)}


def log_prob(position: int) -> float:
    return -0.01 * (position + 1)


def bundle(call: int) -> dict[str, Any]:
    start, end = BOUNDARIES[call]
    return {
        "prompt_token_ids": FULL_SEQUENCE[:start],
        "generation_token_ids": FULL_SEQUENCE[start:end],
        "generation_log_probs": [log_prob(position) for position in range(start, end)],
    }


def make_row(task: int = 0, rollout: int = 0, reward: float = 1.0, episode_end: str = "completed") -> dict[str, Any]:
    output = [
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city": "Paris"}', **bundle(0)},
        {"type": "function_call_output", "call_id": "c1", "output": "20"},
        {"type": "function_call", "call_id": "c2", "name": "weather", "arguments": '{"city": "Oslo"}', **bundle(1)},
        {"type": "function_call_output", "call_id": "c2", "output": "4"},
        {
            "type": "message",
            "role": "assistant",
            "id": "m1",
            "status": "completed",
            "content": [{"type": "output_text", "text": "It is 20.", "annotations": []}],
            **bundle(2),
        },
    ]
    return {
        "_ng_task_index": task,
        "_ng_rollout_index": rollout,
        "responses_create_params": {
            "instructions": "You are helpful.",
            "input": [{"role": "user", "content": "What is the weather?"}],
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object", "properties": {}}}],
        },
        "response": {"id": "r1", "output": output},
        "reward": reward,
        "episode_end": episode_end,
    }


def without_token_ids(row: dict[str, Any]) -> dict[str, Any]:
    row = copy.deepcopy(row)
    for item in row["response"]["output"]:
        for key in ("prompt_token_ids", "generation_token_ids", "generation_log_probs"):
            item.pop(key, None)
    return row
