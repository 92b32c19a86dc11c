"""The shapes a model server expects of its upstream's answers, checked before anything reads them.

Only what our code relies on is checked (the agent reads `output` items and `usage`; the Chat
Completions conversion reads `choices[0].message`, tool calls, token ids and `usage`); any other
key passes, and keys that are absent are fine. A wrong type where we would read it is a problem
named by its field, e.g. "field `output.0`: Input should be a valid dictionary (got 1)".

TypedDicts validated by a `TypeAdapter` rather than pydantic models: the check builds no model
objects, so it costs about what parsing the JSON costs (3 us for a typical answer, against 16 us
with models), twice per rollout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, NotRequired

from pydantic import Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic needs this one, not typing's, before Python 3.12

MAX_PROBLEMS = 3


class _TextPart(TypedDict, total=False):
    type: str | None
    text: str | None


class _OutputItem(TypedDict, total=False):
    type: str | None
    role: str | None
    content: str | list[_TextPart] | None
    summary: list[_TextPart] | None
    name: str | None
    arguments: str | None
    call_id: str | None


class _TokenDetails(TypedDict, total=False):
    cached_tokens: int | None
    reasoning_tokens: int | None


class _ResponseUsage(TypedDict, total=False):
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    input_tokens_details: _TokenDetails | None
    output_tokens_details: _TokenDetails | None


class _Response(TypedDict):
    output: list[_OutputItem]
    usage: NotRequired[_ResponseUsage | None]
    incomplete_details: NotRequired[dict[str, Any] | None]


class _ToolCallFunction(TypedDict):
    name: str
    arguments: NotRequired[str | dict[str, Any]]


class _ToolCall(TypedDict):
    id: NotRequired[str | None]
    function: _ToolCallFunction


class _LogprobEntry(TypedDict):
    token: NotRequired[str]
    logprob: float


class _Logprobs(TypedDict, total=False):
    content: list[_LogprobEntry] | None


class _ChatMessage(TypedDict, total=False):
    role: str | None
    content: str | list[_TextPart] | None
    reasoning_content: str | None
    reasoning: str | None
    refusal: str | None
    tool_calls: list[_ToolCall] | None


class _Choice(TypedDict):
    message: _ChatMessage
    finish_reason: NotRequired[str | None]
    logprobs: NotRequired[_Logprobs | None]
    token_ids: NotRequired[list[int] | None]


class _ChatUsage(TypedDict, total=False):
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    prompt_tokens_details: _TokenDetails | None
    completion_tokens_details: _TokenDetails | None


class _ChatCompletion(TypedDict):
    choices: Annotated[list[_Choice], Field(min_length=1)]
    usage: NotRequired[_ChatUsage | None]
    prompt_token_ids: NotRequired[list[int] | None]


def _describe(error: ValidationError) -> str:
    errors = error.errors(include_url=False)
    problems = []
    for item in errors[:MAX_PROBLEMS]:
        field = ".".join(str(part) for part in item["loc"]) or "(the body)"
        got = repr(item.get("input"))
        got = got if len(got) <= 60 else got[:60] + "..."
        problems.append(f"field `{field}`: {item['msg']} (got {got})")
    more = len(errors) - MAX_PROBLEMS
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")


def _incomplete_function_calls(response: Any) -> str | None:
    for index, item in enumerate(response["output"]):
        if item.get("type") == "function_call" and (item.get("name") is None or item.get("arguments") is None):
            return f"field `output.{index}`: a function_call item needs a string `name` and `arguments`"
    return None


@dataclass(frozen=True)
class AnswerShape:
    """One kind of upstream answer: its name in error messages and how to check it."""

    what: str
    adapter: TypeAdapter[Any]
    extra_check: Any = None  # (validated answer) -> problem or None, for rules a type cannot say

    def problem_in(self, answer: Any) -> str | None:
        """What is wrong with a parsed answer, or None."""
        try:
            validated = self.adapter.validate_python(answer)
        except ValidationError as error:
            return _describe(error)
        return self.extra_check(validated) if self.extra_check else None

    def problem_in_json(self, raw: bytes) -> str | None:
        """What is wrong with a raw JSON answer (parsed and checked in one pass), or None."""
        try:
            validated = self.adapter.validate_json(raw)
        except ValidationError as error:
            return _describe(error)
        return self.extra_check(validated) if self.extra_check else None


RESPONSE = AnswerShape("Responses API response", TypeAdapter(_Response), _incomplete_function_calls)
CHAT_COMPLETION = AnswerShape("chat completion", TypeAdapter(_ChatCompletion))
