"""Write long_context task rows, with the haystack length taken from the environment's config.

    python resources_servers/long_context/generate_tasks.py --output tasks.jsonl --count 100 \
        [--config resources_servers/long_context/configs/long_context.yaml] [--context-words N] [--seed 0]

`context_words`, `kinds` and `distractors` come from the resources server block of `--config`
(command-line flags win). Rows are deterministic per (seed, kind, length).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from resources_servers.long_context.app import LongContextConfig  # noqa: E402
from resources_servers.long_context.haystack import Kind, make_task  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "long_context.yaml"
INSTRUCTION = (
    "Below is a long text. Some sentences in it state special magic numbers for named keys. Read it and answer the "
    "question at the end with the number or numbers only, separated by commas."
)


def settings_from(config_path: Path) -> LongContextConfig:
    loaded = OmegaConf.to_container(OmegaConf.load(config_path), resolve=False)
    for instance in loaded.values():  # type: ignore[union-attr]
        for implementation in (instance.get("resources_servers") or {}).values():
            return LongContextConfig.model_validate(implementation)
    raise SystemExit(f"{config_path}: no resources server block")


def task_row(seed: int, kind: Kind, context_words: int, distractors: int) -> dict[str, Any]:
    task = make_task(seed, kind, context_words, distractors)
    prompt = f"{INSTRUCTION}\n\n<text>\n{task['context']}\n</text>\n\nQuestion: {task['question']}"
    return {
        "responses_create_params": {"input": [{"role": "user", "content": prompt}]},
        "question": task["question"],
        "expected_values": task["expected_values"],
        "distractor_values": task["distractor_values"],
        "kind": kind,
        "context_words": context_words,
        "seed": seed,
        "id": f"long_context-{kind}-{context_words}-{seed}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--count", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--context-words", type=int, default=None)
    args = parser.parse_args()
    settings = settings_from(args.config)
    words = args.context_words or settings.context_words
    with args.output.open("w", encoding="utf-8") as out:
        for offset in range(args.count):
            kind = settings.kinds[offset % len(settings.kinds)]
            out.write(json.dumps(task_row(args.seed + offset, kind, words, settings.distractors)) + "\n")
    print(f"wrote {args.count} tasks of about {words} words to {args.output}")


if __name__ == "__main__":
    main()
