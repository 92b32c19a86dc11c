"""NeMo Gym's `nemo_gym.prompt` import path, onto `nemo_gym.prompt_templates` (the implementation,
also what `ng_collect_rollouts +prompt_config=...` and `ng_materialize_prompts` use).

A prompt file has `user` (required) and `system` (optional), each a `str.format` template whose
`{placeholders}` are the row's top-level fields (`{{`/`}}` for literal braces):

    system: You are a careful solver.
    user: "Solve: {question}"
"""

from __future__ import annotations

import functools

from nemo_gym.prompt_templates import PromptTemplate

__all__ = [
    "PromptConfig",
    "apply_prompt_to_row",
    "fill_prompt",
    "load_prompt_config",
    "validate_prompt_compatibility",
]

PromptConfig = PromptTemplate
"""NeMo Gym's name for a prompt file's contents."""


@functools.lru_cache(maxsize=64)
def load_prompt_config(path: str) -> PromptConfig:
    """The prompt file at `path` (from the working directory, else the project root), parsed and
    checked; cached, so each file is read once. A problem is an InputDataError naming the file."""
    return PromptTemplate.load(path)[0]


def fill_prompt(prompt_config: PromptConfig, row: dict) -> list[dict[str, str]]:
    """The request messages for `row`: a system message when the prompt has one, then the user's.
    A field the row lacks is a KeyError naming it, as in NeMo Gym."""
    return prompt_config.fill(row)


def validate_prompt_compatibility(rows: list[dict], prompt_config: PromptConfig) -> None:
    """ValueError listing the rows (by position) that already have a `responses_create_params.input`,
    which a prompt would replace; NeMo Gym checks a whole data set with it before applying a prompt."""
    clashing = [
        index
        for index, row in enumerate(rows)
        if isinstance(row.get("responses_create_params"), dict) and row["responses_create_params"].get("input")
    ]
    if clashing:
        raise ValueError(
            f"rows {clashing} already have responses_create_params.input and a prompt_config would replace it; "
            f"use one or the other"
        )


def apply_prompt_to_row(row: dict, prompt_config: PromptConfig) -> dict:
    """A copy of `row` whose `responses_create_params.input` is the filled prompt; the row's other request
    fields (tools, temperature, ...) are kept, and `row` itself is left unchanged."""
    params = row.get("responses_create_params")
    params = dict(params) if isinstance(params, dict) else {}
    params["input"] = fill_prompt(prompt_config, row)
    return {**row, "responses_create_params": params}
