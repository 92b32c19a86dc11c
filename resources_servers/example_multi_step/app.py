"""example_multi_step: look up a value for each synonym, one call at a time, then report them in order.

Trains multi-step tool use with an ordering constraint: the model picks the right synonym for each
word, calls `get_synonym_value` once per synonym (tasks set `parallel_tool_calls: false`), and
finally calls `extract_synonym_values` with the values in the order the words were given. Only
the last `extract_synonym_values` call counts, so a model may correct itself.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from nemo_gym.openai_types import function_calls
from nemo_gym.servers.resources import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)

EXTRACT_TOOL = "extract_synonym_values"


class ExampleMultiStepConfig(BaseResourcesServerConfig):
    pass


class GetSynonymValueRequest(BaseModel):
    synonym: str


class GetSynonymValueResponse(BaseModel):
    synonym_value: int


class ExtractSynonymValuesRequest(BaseModel):
    synonym_values: list[int]


class ExtractSynonymValuesResponse(BaseModel):
    success: bool


class MultiStepVerifyRequest(BaseVerifyRequest):
    id: int | str | None = None
    expected_synonyms: list[str] = Field(default_factory=list)
    expected_synonym_values: list[int]


class MultiStepVerifyResponse(MultiStepVerifyRequest, BaseVerifyResponse):
    parsed_synonym_values: list[int] | None
    """Values of the last `extract_synonym_values` call; None when there was no usable call."""
    accuracy: bool
    set_overlap: float


def synonym_value(synonym: str) -> int:
    """The value the tool reports for a synonym: the sum of its characters' code points."""
    return sum(ord(char) for char in synonym)


def last_extracted_values(output: list[dict[str, Any]]) -> list[int] | None:
    """`synonym_values` of the last `extract_synonym_values` call, or None if it is missing or malformed.

    A malformed last call does not fall back to an earlier one: the model's final word is what is graded.
    """
    calls = [call for call in function_calls(output) if call.get("name") == EXTRACT_TOOL]
    if not calls:
        return None
    try:
        arguments = json.loads(calls[-1].get("arguments") or "")
    except (json.JSONDecodeError, TypeError):
        return None
    values = arguments.get("synonym_values") if isinstance(arguments, dict) else None
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return None
    return values


def set_overlap(parsed: list[int] | None, expected: list[int]) -> float:
    """Share of the distinct expected values the model reported, ignoring order."""
    wanted = set(expected)
    if not wanted:
        return 1.0 if not parsed else 0.0
    return len(wanted & set(parsed or [])) / len(wanted)


class ExampleMultiStepServer(SimpleResourcesServer):
    config: ExampleMultiStepConfig

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/get_synonym_value")(self.get_synonym_value)
        app.post(f"/{EXTRACT_TOOL}")(self.extract_synonym_values)
        return app

    async def get_synonym_value(self, body: GetSynonymValueRequest) -> GetSynonymValueResponse:
        return GetSynonymValueResponse(synonym_value=synonym_value(body.synonym))

    async def extract_synonym_values(self, body: ExtractSynonymValuesRequest) -> ExtractSynonymValuesResponse:
        # Grading reads the call from the response, so the tool only acknowledges it.
        return ExtractSynonymValuesResponse(success=True)

    async def verify(self, body: MultiStepVerifyRequest) -> MultiStepVerifyResponse:
        parsed = last_extracted_values(body.response.output)
        accuracy = parsed == body.expected_synonym_values
        return MultiStepVerifyResponse(
            **body.model_dump(),
            reward=1.0 if accuracy else 0.0,
            parsed_synonym_values=parsed,
            accuracy=accuracy,
            set_overlap=set_overlap(parsed, body.expected_synonym_values),
        )


if __name__ == "__main__":
    ExampleMultiStepServer.run_webserver()
