"""NeMo Gym's `nemo_gym.prompt` import path: prompt templates kept in YAML and filled from a row.

A prompt file has `user` (required) and `system` (optional), each a `str.format` template whose
`{placeholders}` are the row's top-level fields (`{{`/`}}` for literal braces):

    system: You are a careful solver.
    user: "Solve: {question}"
"""

from __future__ import annotations

import functools
import pathlib

import yaml
from pydantic import BaseModel, ValidationError

from nemo_gym import PARENT_DIR
from nemo_gym.errors import InputDataError

__all__ = ["PromptConfig", "apply_prompt_to_row", "fill_prompt", "load_prompt_config"]


class PromptConfig(BaseModel):
    user: str
    system: str | None = None


def _resolve(path: str) -> pathlib.Path:
    # A relative path is looked up from the working directory, then from the project root.
    candidate = pathlib.Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    in_project = PARENT_DIR / candidate
    return in_project if in_project.exists() else candidate


@functools.lru_cache(maxsize=64)
def load_prompt_config(path: str) -> PromptConfig:
    """The prompt file at `path`, parsed and checked (cached: each file is read once)."""
    resolved = _resolve(path)
    try:
        data = yaml.safe_load(resolved.read_text())
    except OSError as error:
        raise InputDataError(f"{resolved}: cannot read the prompt file ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise InputDataError(f"{resolved}: not valid YAML ({error})") from None
    try:
        return PromptConfig.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, item['loc'])) or 'file'}: {item['msg']}" for item in error.errors())
        raise InputDataError(f"{resolved}: {problems}") from None


def fill_prompt(prompt_config: PromptConfig, row: dict) -> list[dict[str, str]]:
    """The request messages for `row`: a system message when the prompt has one, then the user's."""
    try:
        messages = []
        if prompt_config.system is not None:
            messages.append({"role": "system", "content": prompt_config.system.format_map(row)})
        messages.append({"role": "user", "content": prompt_config.user.format_map(row)})
    except KeyError as error:
        raise KeyError(f"the prompt uses the field {error} but the row has only: {', '.join(row)}") from None
    return messages


def apply_prompt_to_row(row: dict, prompt_config: PromptConfig) -> dict:
    """A copy of `row` whose `responses_create_params.input` is the filled prompt; the row's other request
    fields (tools, temperature, ...) are kept, and `row` itself is left unchanged."""
    params = row.get("responses_create_params")
    params = dict(params) if isinstance(params, dict) else {}
    params["input"] = fill_prompt(prompt_config, row)
    return {**row, "responses_create_params": params}
