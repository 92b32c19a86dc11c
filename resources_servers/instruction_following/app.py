"""instruction_following: IFEval-style verifiable instructions, graded strictly and loosely.

Trains following format and content constraints exactly (word counts, keywords, JSON, sections,
case, punctuation, the reply's language, ...). No tools; the last assistant message is graded against every instruction
in the task with the checkers in `checkers.py` (IFEval's kinds and the IFBench ones NeMo Gym's
rows use). NeMo Gym's row shape is accepted too: the task under `verifier_metadata` (with an
optional `grading_mode`: binary or fraction), `kwargs` entries that are null, and null arguments.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from starlette.concurrency import run_in_threadpool

from nemo_gym.openai_types import last_assistant_text
from nemo_gym.servers.resources import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)
from resources_servers.instruction_following.checkers import (
    RESPONSE_LANGUAGE,
    check_arguments,
    follows,
    language_detector,
)


class InstructionFollowingConfig(BaseResourcesServerConfig):
    reward_mode: Literal["all", "fraction"] = "all"
    """all: 1.0 only when every instruction is followed (IFEval's prompt-level accuracy).
    fraction: the share of instructions followed (instruction-level accuracy)."""
    grading: Literal["strict", "loose"] = "strict"
    """Which grading the reward uses; both are always reported."""


NEMO_GYM_TASK_FIELDS = ("instruction_id_list", "prompt", "kwargs", "grading_mode")
GRADING_MODES = {"binary": "all", "fraction": "fraction"}


class InstructionVerifyRequest(BaseVerifyRequest):
    instruction_id_list: list[str] = Field(min_length=1)
    kwargs: list[dict[str, Any]]
    """One argument dict per instruction, in the same order (`{}` or null when it takes none; null
    arguments are left out, as NeMo Gym leaves them out)."""
    prompt: str | None = None
    grading_mode: Literal["binary", "fraction"] | None = None
    """NeMo Gym's per-row reward mode (binary = all followed); None = the server's `reward_mode`."""
    verifier_metadata: dict[str, Any] | None = None
    """NeMo Gym's wrapper: its task fields, when present, win over the top-level ones."""

    @model_validator(mode="before")
    @classmethod
    def read_nemo_gym_shape(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        wrapped = data.get("verifier_metadata")
        if isinstance(wrapped, dict):
            data.update({name: wrapped[name] for name in NEMO_GYM_TASK_FIELDS if name in wrapped})
        kwargs = data.get("kwargs")
        if isinstance(kwargs, list):
            data["kwargs"] = [
                {name: value for name, value in (entry or {}).items() if value is not None}
                if entry is None or isinstance(entry, dict)
                else entry
                for entry in kwargs
            ]
        return data

    @model_validator(mode="after")
    def instructions_are_known_and_complete(self) -> InstructionVerifyRequest:
        if len(self.kwargs) != len(self.instruction_id_list):
            raise ValueError(f"kwargs has {len(self.kwargs)} entries for {len(self.instruction_id_list)} instructions")
        problems = [p for i, a in zip(self.instruction_id_list, self.kwargs) if (p := check_arguments(i, a))]
        if problems:
            raise ValueError("; ".join(problems))
        return self


class InstructionVerifyResponse(InstructionVerifyRequest, BaseVerifyResponse):
    follow_instruction_list: list[bool]
    """Strict result per instruction."""
    follow_instruction_list_loose: list[bool]
    prompt_level_strict: bool
    prompt_level_loose: bool
    instruction_fraction_strict: float
    instruction_fraction_loose: float


class InstructionFollowingServer(SimpleResourcesServer):
    config: InstructionFollowingConfig

    async def verify(self, body: InstructionVerifyRequest) -> InstructionVerifyResponse:
        text = last_assistant_text(body.response.output)
        if RESPONSE_LANGUAGE in body.instruction_id_list:
            await run_in_threadpool(language_detector)  # the first call loads langdetect's profiles: seconds
        pairs = list(zip(body.instruction_id_list, body.kwargs))
        strict = [follows(i, a, text, loose=False) for i, a in pairs]
        loose = [follows(i, a, text, loose=True) for i, a in pairs]
        chosen = strict if self.config.grading == "strict" else loose
        mode = GRADING_MODES[body.grading_mode] if body.grading_mode else self.config.reward_mode
        reward = float(all(chosen)) if mode == "all" else sum(chosen) / len(chosen)
        return InstructionVerifyResponse(
            **body.model_dump(),
            reward=reward,
            follow_instruction_list=strict,
            follow_instruction_list_loose=loose,
            prompt_level_strict=all(strict),
            prompt_level_loose=all(loose),
            instruction_fraction_strict=sum(strict) / len(strict),
            instruction_fraction_loose=sum(loose) / len(loose),
        )


if __name__ == "__main__":
    InstructionFollowingServer.run_webserver()
