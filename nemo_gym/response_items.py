"""Typed Responses API items, for environment code that reads `item.type`, `item.content[0].text`,
`item.arguments` and `response.output_text` (NeMo Gym's style).

Our servers keep items as plain dicts on the hot path (`nemo_gym.openai_types`): the agent and the
collector forward them as bytes. These models are used only where an environment asks for them,
through the request classes of `nemo_gym.base_resources_server`; they parse the same JSON.

Round trip: a typed item serialises to exactly the dict it was parsed from. Only the fields that
were given are written back (plus each class's discriminators, such as `type`, so an item built in
Python still says what it is), and unknown keys such as training token ids are kept. Validation is
lenient where ours is (an output message without an `id` is still a message); NeMo Gym's classes
are the same shape, so code written against them reads these unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    model_serializer,
    model_validator,
)

from nemo_gym.openai_types import ChatCompletionCreateParams, Response, ResponseCreateParams

JSONDict = dict[str, Any]


class SentFieldsModel(BaseModel):
    """A model that serialises the fields it was given (and its `ALWAYS_SENT` ones), nothing more."""

    model_config = ConfigDict(extra="allow")

    ALWAYS_SENT: ClassVar[frozenset[str]] = frozenset({"type"})
    _LEFT_OUT_UNLESS_GIVEN: ClassVar[frozenset[str]] = frozenset()
    """The declared fields not in ALWAYS_SENT, worked out once per class (see `__pydantic_init_subclass__`)."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._LEFT_OUT_UNLESS_GIVEN = frozenset(cls.model_fields) - cls.ALWAYS_SENT

    @model_serializer(mode="wrap")
    def _as_given(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        # Items parsed from JSON were given most of their fields: usually nothing is left out, and the
        # serialised dict is handed on as it is. (A dict comprehension over every key, and reading
        # `model_fields` per item, made dumping a verify request ~3x slower than dumping it untyped.)
        left_out = self._LEFT_OUT_UNLESS_GIVEN - self.model_fields_set
        if left_out and isinstance(data, dict):
            for key in left_out:
                data.pop(key, None)
        return data


# ---- content parts -------------------------------------------------------------------------------


class OutputText(SentFieldsModel):
    """`{"type": "output_text", "text": ..., "annotations": [...]}` inside an assistant message."""

    ALWAYS_SENT: ClassVar[frozenset[str]] = frozenset({"type", "annotations"})

    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] | None = None


class OutputRefusal(SentFieldsModel):
    type: Literal["refusal"] = "refusal"
    refusal: str


class OtherPart(SentFieldsModel):
    """A content part of a type these models do not name (kept as sent)."""

    type: str = ""


def _part_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("output_text", "refusal") else "other"


OutputContentPart = Annotated[
    Annotated[OutputText, Tag("output_text")]
    | Annotated[OutputRefusal, Tag("refusal")]
    | Annotated[OtherPart, Tag("other")],
    Discriminator(_part_tag),
]


class SummaryText(SentFieldsModel):
    type: Literal["summary_text"] = "summary_text"
    text: str


class ReasoningText(SentFieldsModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


# ---- items ---------------------------------------------------------------------------------------


class OutputMessage(SentFieldsModel):
    """An assistant message the model produced."""

    ALWAYS_SENT: ClassVar[frozenset[str]] = frozenset({"type", "role"})

    id: str = ""
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"] = "completed"
    content: list[OutputContentPart] = Field(default_factory=list)


class InputMessage(SentFieldsModel):
    """A message of the request (`{"role": "user", "content": "..."}`; `type` is optional there)."""

    ALWAYS_SENT: ClassVar[frozenset[str]] = frozenset({"role"})

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[JSONDict]


class Message(SentFieldsModel):
    """A request message whose content is a list of parts and which carries a status."""

    ALWAYS_SENT: ClassVar[frozenset[str]] = frozenset({"role"})

    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer"]
    status: Literal["in_progress", "completed", "incomplete"] = "completed"
    content: list[JSONDict]


class FunctionCall(SentFieldsModel):
    """A tool call the model made: `name` and JSON-encoded `arguments`."""

    type: Literal["function_call"] = "function_call"
    id: str | None = None
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class FunctionCallOutput(SentFieldsModel):
    """What a tool answered to the call `call_id`."""

    type: Literal["function_call_output"] = "function_call_output"
    id: str | None = None
    call_id: str
    output: str | list[JSONDict]
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class ReasoningItem(SentFieldsModel):
    id: str = ""
    type: Literal["reasoning"] = "reasoning"
    summary: list[SummaryText] = Field(default_factory=list)
    encrypted_content: str | None = None
    content: list[ReasoningText] | None = None


class OtherItem(SentFieldsModel):
    """An item of a type these models do not name (hosted tool calls, MCP items...): kept as sent,
    with its `type` readable."""

    type: str = ""


_TAG_OF_CLASS: dict[type, str] = {
    OutputMessage: "output_message",
    InputMessage: "input_message",
    Message: "message",
    FunctionCall: "function_call",
    FunctionCallOutput: "function_call_output",
    ReasoningItem: "reasoning",
    OtherItem: "other",
}


def _item_tag(value: Any) -> str:
    if not isinstance(value, dict):
        tag = _TAG_OF_CLASS.get(type(value))  # the class itself: every item of a parsed response
        if tag is not None:
            return tag
        for cls, tag in _TAG_OF_CLASS.items():
            if isinstance(value, cls):
                return tag
        return "other"
    kind = value.get("type")
    if kind is None or kind == "message":
        # A replayed assistant output (a list of output parts) is an output message; a message the
        # caller wrote (`{"role": ..., "content": "..."}`) is an input message.
        if value.get("role") == "assistant" and isinstance(value.get("content"), list):
            return "output_message"
        return "input_message"
    if kind in ("function_call", "function_call_output", "reasoning"):
        return kind
    return "other"


Item = Annotated[
    Annotated[OutputMessage, Tag("output_message")]
    | Annotated[InputMessage, Tag("input_message")]
    | Annotated[Message, Tag("message")]
    | Annotated[FunctionCall, Tag("function_call")]
    | Annotated[FunctionCallOutput, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[OtherItem, Tag("other")],
    Discriminator(_item_tag),
]
"""Any item of a request's `input` or a response's `output`, parsed to its class by `type`."""


# ---- usage ---------------------------------------------------------------------------------------


class InputTokensDetails(SentFieldsModel):
    ALWAYS_SENT: ClassVar[frozenset[str]] = frozenset()
    cached_tokens: int | None = 0


class OutputTokensDetails(SentFieldsModel):
    ALWAYS_SENT: ClassVar[frozenset[str]] = frozenset()
    reasoning_tokens: int | None = 0


class Usage(SentFieldsModel):
    ALWAYS_SENT: ClassVar[frozenset[str]] = frozenset()

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)


# ---- whole payloads ------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    if isinstance(value, list):
        for element in value:  # a loop, not any(<generator>): this runs for every list of every request
            if isinstance(element, BaseModel):
                return [_plain(element) for element in value]
    return value


def _plain_except(data: Any, typed: frozenset[str]) -> Any:
    """`data` with OpenAI SDK objects (an environment's `tools=[FunctionTool(...)]`) as the JSON
    they stand for, except under the keys whose items are typed here."""
    if not isinstance(data, dict):
        return data
    converted: dict[str, Any] | None = None  # a copy only when there is something to convert: rarely
    for key, value in data.items():
        if key in typed:
            continue
        plain = _plain(value)
        if plain is not value:
            if converted is None:
                converted = dict(data)
            converted[key] = plain
    return data if converted is None else converted


class IncompleteDetails(SentFieldsModel):
    """Why a response stopped early: `response.incomplete_details.reason` ("max_output_tokens", ...),
    read as an attribute the way environments written for the OpenAI SDK's object read it."""

    ALWAYS_SENT: ClassVar[frozenset[str]] = frozenset()

    reason: str | None = None


class TypedResponse(Response):
    """A Responses API `response` whose `output` items are typed. Serialises like `Response`."""

    output: list[Item] = Field(default_factory=list)  # type: ignore[assignment]
    usage: Usage | None = None  # type: ignore[assignment]
    incomplete_details: IncompleteDetails | None = None  # type: ignore[assignment]

    @model_validator(mode="before")
    @classmethod
    def _sdk_objects_as_json(cls, data: Any) -> Any:
        return _plain_except(data, frozenset({"output", "usage"}))

    @property
    def output_text(self) -> str:
        """All `output_text` parts of the output's messages, concatenated (as the OpenAI SDK's)."""
        return "".join(
            part.text
            for item in self.output
            if isinstance(item, OutputMessage)
            for part in item.content
            if isinstance(part, OutputText)
        )


class TypedResponseCreateParams(ResponseCreateParams):
    """A `POST /v1/responses` body whose `input` items are typed. Serialises like `ResponseCreateParams`."""

    input: str | list[Item]  # type: ignore[assignment]

    @model_validator(mode="before")
    @classmethod
    def _sdk_objects_as_json(cls, data: Any) -> Any:
        return _plain_except(data, frozenset({"input"}))


class TypedChatCompletionCreateParams(ChatCompletionCreateParams):
    """A `POST /v1/chat/completions` body with the sampling fields environments set by name."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    tool_choice: str | JSONDict | None = None
    response_format: JSONDict | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
