"""Prompt templates (`ng_collect_rollouts +prompt_config=...`, as in NeMo Gym): build each task's
request input from its own fields at collection time.

A prompt file is YAML with `user` (required) and `system` (optional), each a `str.format` template
whose `{placeholders}` are the row's top-level fields (`{{` and `}}` for literal braces):

    system: You are a careful solver.
    user: "Solve: {question}"

A row then becomes `responses_create_params.input = [system?, user]`; its other request fields (tools,
temperature, ...) are kept. A row that already has an input is refused, so the prompt never silently
replaces a conversation.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from nemo_gym.errors import InputDataError

JSONDict = dict[str, Any]


class PromptTemplate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    user: str
    system: str | None = None

    @classmethod
    def load(cls, path: str | Path) -> tuple[PromptTemplate, str]:
        """The template in `path` and the SHA-256 of the file (part of a collection's job identity)."""
        try:
            raw = Path(path).read_bytes()
        except OSError as error:
            raise InputDataError(f"cannot read the prompt file ({error.strerror})", path=str(path)) from None
        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as error:
            raise InputDataError(f"not valid YAML ({error})", path=str(path)) from None
        if not isinstance(data, dict):
            raise InputDataError("a prompt file is a mapping with `user` (and optionally `system`)", path=str(path))
        try:
            template = cls.model_validate(data)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise InputDataError(problems, path=str(path)) from None
        return template, hashlib.sha256(raw).hexdigest()

    def messages(self, row: JSONDict, *, path: str, line: int) -> list[JSONDict]:
        """The request messages for `row`: a system message when the template has one, then the user's."""
        parts = [("system", self.system)] if self.system is not None else []
        parts.append(("user", self.user))
        messages = []
        for role, template in parts:
            try:
                content = template.format_map(row)
            except KeyError as error:
                raise InputDataError(
                    f"the prompt's {role} template uses the field {error} but the row has only: {', '.join(row)}",
                    path=path,
                    line=line,
                ) from None
            except (ValueError, IndexError, AttributeError) as error:
                raise InputDataError(
                    f"the prompt's {role} template cannot be filled ({error})", path=path, line=line
                ) from None
            messages.append({"role": role, "content": content})
        return messages

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
