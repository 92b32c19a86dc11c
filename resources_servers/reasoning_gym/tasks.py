"""Task rows from the `reasoning-gym` package: any registered generator, size, seed and difficulty.

`task_rows` is what `prepare_data.py` writes and the tests use. Each row keeps what the package's
scorer needs (`question`, `answer`, `metadata`) plus the generator's name and config, so `verify`
can rebuild that generator's scorer.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import reasoning_gym
from reasoning_gym.factory import DATASETS
from reasoning_gym.utils import SYSTEM_PROMPTS

SYSTEM_PROMPT = SYSTEM_PROMPTS["default"]


def generator_names() -> list[str]:
    return sorted(DATASETS)


def task_rows(name: str, *, size: int, seed: int, config: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    if name not in DATASETS:
        raise ValueError(f"unknown reasoning-gym generator {name!r}")
    dataset = reasoning_gym.create_dataset(name, size=size, seed=seed, **(config or {}))
    for index in range(size):
        entry = dataset[index]
        # Round-trip through JSON now, so verify sees exactly what a JSONL row will hold.
        metadata = json.loads(json.dumps(entry["metadata"], default=str))
        yield {
            "responses_create_params": {
                "input": [
                    {"role": "developer", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": entry["question"]},
                ]
            },
            "question": entry["question"],
            "answer": entry["answer"],
            "metadata": metadata,
            "dataset_name": name,
            "dataset_config": config or {},
            "id": f"{name}-{seed}-{index}",
        }
