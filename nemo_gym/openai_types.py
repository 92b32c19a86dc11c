"""Typed shapes of the OpenAI Responses and Chat Completions payloads that cross our servers.

Validation happens once, at the server boundary. Items inside `input`/`output` stay plain dicts
(with typed accessors below) because the agent loop forwards them verbatim: re-validating every
item on every hop was a measurable share of NeMo Gym's CPU per rollout. Unknown keys are kept
(`extra="allow"`) so newer OpenAI fields and training extras such as token ids pass through.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JSONDict = dict[str, Any]


class ResponseCreateParams(BaseModel):
    """Body of `POST /v1/responses` (non-streaming)."""

    model_config = ConfigDict(extra="allow")

    input: str | list[JSONDict]
    tools: list[JSONDict] = Field(default_factory=list)
    model: str | None = None
    instructions: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    # NeMo Gym's rows store `null` for both (the OpenAI default applies); keep the null so a
    # row round-trips unchanged, and the model servers read null as the default.
    tool_choice: str | JSONDict | None = "auto"
    parallel_tool_calls: bool | None = True
    metadata: dict[str, Any] | None = None
    stream: Literal[False] | None = None


class Response(BaseModel):
    """A Responses API `response` object. `output` holds message, reasoning, function_call
    and function_call_output items as dicts."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["response"] = "response"
    created_at: float | int = 0
    model: str = ""
    output: list[JSONDict] = Field(default_factory=list)
    usage: JSONDict | None = None
    status: str | None = None
    incomplete_details: JSONDict | None = None
    error: JSONDict | None = None


class ChatCompletionCreateParams(BaseModel):
    """Body of `POST /v1/chat/completions` (non-streaming)."""

    model_config = ConfigDict(extra="allow")

    messages: list[JSONDict]
    model: str | None = None
    tools: list[JSONDict] | None = None
    stream: Literal[False] | None = None


USAGE_FIELDS = ("input_tokens", "output_tokens", "total_tokens")


def function_calls(output: list[JSONDict]) -> list[JSONDict]:
    """The `function_call` items of a response output, in order."""
    return [item for item in output if item.get("type") == "function_call"]


def assistant_messages(output: list[JSONDict]) -> list[JSONDict]:
    """The assistant `message` items of a response output, in order."""
    return [item for item in output if item.get("type", "message") == "message" and item.get("role") == "assistant"]


def output_text(output: list[JSONDict]) -> str:
    """All `output_text` parts of the assistant messages, concatenated (the SDK's `response.output_text`)."""
    parts: list[str] = []
    for message in assistant_messages(output):
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
            continue
        for part in content or []:
            if part.get("type") == "output_text":
                parts.append(part.get("text", ""))
    return "".join(parts)


def last_assistant_text(output: list[JSONDict]) -> str:
    """Text of the last assistant message (empty when there is none)."""
    messages = assistant_messages(output)
    return output_text(messages[-1:]) if messages else ""


def add_usage(total: JSONDict | None, usage: JSONDict | None) -> JSONDict | None:
    """Sum two Responses `usage` dicts, including their nested `*_details` counters."""
    if not usage:
        return total
    if not total:
        return _copy_usage(usage)
    summed = dict(total)
    for key, value in usage.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            summed[key] = (summed.get(key) or 0) + value
        elif isinstance(value, dict):
            inner = dict(summed.get(key) or {})
            for inner_key, inner_value in value.items():
                if isinstance(inner_value, (int, float)) and not isinstance(inner_value, bool):
                    inner[inner_key] = (inner.get(inner_key) or 0) + inner_value
            summed[key] = inner
    return summed


def _copy_usage(usage: JSONDict) -> JSONDict:
    return {key: dict(value) if isinstance(value, dict) else value for key, value in usage.items()}
