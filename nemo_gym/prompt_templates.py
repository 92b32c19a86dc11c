"""Prompt templates (`ng_collect_rollouts +prompt_config=...`, `ng_materialize_prompts`, a data set's
`prompt_config`, as in NeMo Gym): build a task's request input from its own fields.

The one implementation; `nemo_gym.prompt` is NeMo Gym's import path onto it (`PromptConfig`,
`load_prompt_config`, `fill_prompt`, `apply_prompt_to_row`).

A prompt file is YAML with `user` (required) and `system` (optional), each a `str.format` template
whose `{placeholders}` are the row's top-level fields (`{{` and `}}` for literal braces):

    system: You are a careful solver.
    user: "Solve: {question}"

A row then becomes `responses_create_params.input = [system?, user]`; its other request fields (tools,
temperature, ...) are kept. At collection time a row that already has an input is refused, so the
prompt never silently replaces a conversation. A relative path is looked up from the working
directory, then from the project root, as NeMo Gym looks it up.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from nemo_gym import PARENT_DIR
from nemo_gym.errors import InputDataError

__all__ = ["PromptTemplate", "resolve_prompt_path"]

JSONDict = dict[str, Any]


def resolve_prompt_path(path: str | Path) -> Path:
    """`path` as given when it is absolute or exists from here, else under the project root when it is there."""
    candidate = Path(path)
    if candidate.is_absolute() or candidate.exists():
        return candidate
    in_project = PARENT_DIR / candidate
    return in_project if in_project.exists() else candidate


class PromptTemplate(BaseModel):
    """A prompt file: `user` and optional `system` templates. Unknown keys are refused (a `sytem:` typo
    would otherwise drop the system prompt without a word)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user: str
    system: str | None = None

    @classmethod
    def load(cls, path: str | Path) -> tuple[PromptTemplate, str]:
        """The template in `path` and the SHA-256 of the file (part of a collection's job identity)."""
        resolved = resolve_prompt_path(path)
        try:
            raw = resolved.read_bytes()
        except OSError as error:
            raise InputDataError(f"cannot read the prompt file ({error.strerror})", path=str(resolved)) from None
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise InputDataError(f"not valid YAML ({error})", path=str(resolved)) from None
        if not isinstance(data, dict):
            raise InputDataError("a prompt file is a mapping with `user` (and optionally `system`)", path=str(resolved))
        try:
            template = cls.model_validate(data)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise InputDataError(problems, path=str(resolved)) from None
        return template, hashlib.sha256(raw).hexdigest()

    def fill(self, row: JSONDict) -> list[JSONDict]:
        """The request messages for `row`: a system message when the template has one, then the user's.
        A field the row lacks is a KeyError naming it (NeMo Gym's `fill_prompt` contract); a template
        that cannot be filled otherwise is a ValueError naming the role."""
        parts = [("system", self.system)] if self.system is not None else []
        parts.append(("user", self.user))
        messages = []
        for role, template in parts:
            try:
                content = template.format_map(row)
            except KeyError as error:
                raise KeyError(
                    f"the prompt's {role} template uses the field {error} but the row has only: {', '.join(row)}"
                ) from None
            except (ValueError, IndexError, AttributeError) as error:
                raise ValueError(f"the prompt's {role} template cannot be filled ({error})") from None
            messages.append({"role": role, "content": content})
        return messages

    def messages(self, row: JSONDict, *, path: str, line: int) -> list[JSONDict]:
        """`fill(row)`, its problems as InputDataError naming the file and line of the row."""
        try:
            return self.fill(row)
        except KeyError as error:
            raise InputDataError(str(error.args[0]), path=path, line=line) from None
        except ValueError as error:
            raise InputDataError(str(error), path=path, line=line) from None

    def apply(self, row: Any, *, path: str, line: int) -> Any:
        """`row` with `responses_create_params.input` built from the template (a new dict)."""
        if not isinstance(row, dict):
            return row  # check_task names what is wrong with it
        params = row.get("responses_create_params")
        if params is not None and not isinstance(params, dict):
            return row
        params = dict(params or {})
        if params.get("input"):
            raise InputDataError(
                "the row already has an input and +prompt_config would replace it; use one or the other",
                path=path,
                line=line,
                field="responses_create_params.input",
            )
        params["input"] = self.messages(row, path=path, line=line)
        return row | {"responses_create_params": params}
