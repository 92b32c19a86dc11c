"""NeMo Gym's `nemo_gym.openai_utils` import path: the OpenAI payload types and client environments use.

Entry point for environment authors; the types live in `nemo_gym.response_items` (typed items,
used where an environment reads them) and `nemo_gym.openai_types` (the dict-based shapes our
servers pass along). `NeMoGymResponse(...)` and the typed items are built and read as in NeMo Gym:

    from nemo_gym.openai_utils import NeMoGymResponse, NeMoGymResponseOutputMessage, NeMoGymResponseOutputText

    response = NeMoGymResponse(id="r", output=[NeMoGymResponseOutputMessage(id="m", content=[
        NeMoGymResponseOutputText(text="42", annotations=[])])])
    response.output_text  # "42"
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from nemo_gym.client import HttpClient, Timeouts
from nemo_gym.response_items import (
    FunctionCall,
    FunctionCallOutput,
    InputMessage,
    InputTokensDetails,
    Item,
    Message,
    OutputMessage,
    OutputRefusal,
    OutputText,
    OutputTokensDetails,
    ReasoningItem,
    ReasoningText,
    SummaryText,
    TypedChatCompletionCreateParams,
    TypedResponse,
    TypedResponseCreateParams,
    Usage,
)
from nemo_gym.retry import UPSTREAM_RETRY

NeMoGymResponse = TypedResponse
NeMoGymResponseCreateParamsNonStreaming = TypedResponseCreateParams
NeMoGymEasyInputMessage = InputMessage
NeMoGymMessage = Message
NeMoGymResponseOutputMessage = OutputMessage
NeMoGymResponseOutputText = OutputText
NeMoGymResponseOutputRefusal = OutputRefusal
NeMoGymResponseFunctionToolCall = FunctionCall
NeMoGymFunctionCallOutput = FunctionCallOutput
NeMoGymResponseReasoningItem = ReasoningItem
NeMoGymSummary = SummaryText
NeMoGymReasoningContent = ReasoningText
NeMoGymResponseUsage = Usage
NeMoGymResponseInputTokensDetails = InputTokensDetails
NeMoGymResponseOutputTokensDetails = OutputTokensDetails
NeMoGymResponseInputItem = Item
NeMoGymResponseInput = list[Item]
"""A request's `input` as a list of items."""
NeMoGymResponseOutputItem = Item
NeMoGymChatCompletionCreateParamsNonStreaming = TypedChatCompletionCreateParams


class TokenIDLogProbMixin(BaseModel):
    """The token fields our model servers put on every generated item (`return_token_id_information`):
    the prompt's ids, the generated ids and their log probs. A `...ForTraining` item requires them."""

    prompt_token_ids: list[int]
    generation_token_ids: list[int]
    generation_log_probs: list[float]


class NeMoGymEasyInputMessageForTraining(InputMessage, TokenIDLogProbMixin):
    pass


class NeMoGymMessageForTraining(Message, TokenIDLogProbMixin):
    pass


class NeMoGymResponseOutputMessageForTraining(OutputMessage, TokenIDLogProbMixin):
    """An assistant message with the token ids it was generated as (read by agents that train)."""


class NeMoGymResponseFunctionToolCallForTraining(FunctionCall, TokenIDLogProbMixin):
    pass


class NeMoGymResponseReasoningItemForTraining(ReasoningItem, TokenIDLogProbMixin):
    pass


RESPONSES_TO_TRAIN: dict[type[BaseModel], type[BaseModel]] = {
    InputMessage: NeMoGymEasyInputMessageForTraining,
    Message: NeMoGymMessageForTraining,
    OutputMessage: NeMoGymResponseOutputMessageForTraining,
    FunctionCall: NeMoGymResponseFunctionToolCallForTraining,
    ReasoningItem: NeMoGymResponseReasoningItemForTraining,
}
"""Each item class -> its `...ForTraining` class, as NeMo Gym names them."""


_CHAT_TYPES = (
    "NeMoGymChatCompletionMessage",
    "NeMoGymChatCompletionMessageForTraining",
    "NeMoGymChoice",
    "NeMoGymChatCompletion",
)


def _chat_types() -> dict[str, type[BaseModel]]:
    """The chat completion classes, built on the OpenAI SDK's models. Importing `openai` loads its
    whole client and every type it has (~0.5 s): an environment whose server imports this module
    for the Responses types above (every `base_resources_server` app does) must not pay it, so these
    are made on first use (`__getattr__`)."""
    from openai.types.chat import ChatCompletion, ChatCompletionMessage
    from openai.types.chat.chat_completion import Choice

    class NeMoGymChatCompletionMessage(ChatCompletionMessage):
        pass

    class NeMoGymChatCompletionMessageForTraining(NeMoGymChatCompletionMessage, TokenIDLogProbMixin):
        pass

    class NeMoGymChoice(Choice):
        message: NeMoGymChatCompletionMessage

    class NeMoGymChatCompletion(ChatCompletion):
        """A `/v1/chat/completions` answer (the OpenAI SDK's model: `.choices[0].message.content`)."""

        choices: list[NeMoGymChoice]  # type: ignore[assignment]

    made: dict[str, type[BaseModel]] = {
        "NeMoGymChatCompletionMessage": NeMoGymChatCompletionMessage,
        "NeMoGymChatCompletionMessageForTraining": NeMoGymChatCompletionMessageForTraining,
        "NeMoGymChoice": NeMoGymChoice,
        "NeMoGymChatCompletion": NeMoGymChatCompletion,
    }
    for cls in made.values():
        cls.__qualname__ = cls.__name__  # importable (and picklable) as nemo_gym.openai_utils.<name>
    return made


if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion, ChatCompletionMessage
    from openai.types.chat.chat_completion import Choice

    class NeMoGymChatCompletionMessage(ChatCompletionMessage): ...

    class NeMoGymChatCompletionMessageForTraining(NeMoGymChatCompletionMessage, TokenIDLogProbMixin): ...

    class NeMoGymChoice(Choice):
        message: NeMoGymChatCompletionMessage

    class NeMoGymChatCompletion(ChatCompletion):
        choices: list[NeMoGymChoice]  # type: ignore[assignment]


def __getattr__(name: str) -> Any:
    if name in _CHAT_TYPES:
        globals().update(_chat_types())
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Statuses NeMo Gym's client retries: rate limits and overloaded gateways (each retry also raises
# the attempt budget by one), and 500 (sporadic upstream errors). Ours are classified in nemo_gym.retry.
RATE_LIMIT_ERROR_CODES = [429, 502, 503, 504, 520]
RETRY_ERROR_CODES = RATE_LIMIT_ERROR_CODES + [500]


class NeMoGymAsyncOpenAI:
    """A minimal async OpenAI-compatible client: `create_response`, `create_chat_completion`,
    `create_completion`, `create_models`, `create_tokenize`, each returning the parsed JSON.

    Runs on our pooled `HttpClient` with its bounded retries (429/5xx and connection errors,
    honouring Retry-After); an error status that remains raises `nemo_gym.errors.HTTPStatusError`.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        internal: bool = False,
        default_headers: dict[str, str] | None = None,
        timeouts: Timeouts | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.internal = internal
        self.default_headers = dict(default_headers or {})
        self._timeouts = timeouts
        self._http: HttpClient | None = None

    @property
    def http(self) -> HttpClient:
        if self._http is None:
            self._http = HttpClient(retry=UPSTREAM_RETRY, timeouts=self._timeouts or Timeouts())
        return self._http

    async def _call(self, method: str, url: str, json: Any = None) -> Any:
        headers = self.default_headers | {"Authorization": f"Bearer {self.api_key}"}
        result = await self.http.request(method, url, json=json, headers=headers)
        return result.raise_for_status().json()

    async def create_models(self) -> Any:
        return await self._call("GET", f"{self.base_url}/models")

    async def create_chat_completion(self, **kwargs: Any) -> Any:
        return await self._call("POST", f"{self.base_url}/chat/completions", kwargs)

    async def create_completion(self, **kwargs: Any) -> Any:
        return await self._call("POST", f"{self.base_url}/completions", kwargs)

    async def create_response(self, **kwargs: Any) -> Any:
        return await self._call("POST", f"{self.base_url}/responses", kwargs)

    async def create_tokenize(self, **kwargs: Any) -> Any:
        return await self._call("POST", f"{self.base_url.removesuffix('/v1')}/tokenize", kwargs)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None


def _add_counts(first: int | None, second: int | None) -> int | None:
    if first is None or second is None:
        return first if second is None else second
    return first + second


def accumulate_response_usage(total: Usage | None, additional: Usage | None) -> Usage | None:
    """The token usage of several model calls summed (totals, cached input and reasoning tokens);
    `total` is not changed. None plus None is None, as for a model that reports no usage."""
    if additional is None:
        return total
    if total is None:
        return additional.model_copy(deep=True)
    summed = total.model_copy(deep=True)
    summed.input_tokens = total.input_tokens + additional.input_tokens
    summed.output_tokens = total.output_tokens + additional.output_tokens
    summed.total_tokens = total.total_tokens + additional.total_tokens
    summed.input_tokens_details.cached_tokens = _add_counts(
        total.input_tokens_details.cached_tokens, additional.input_tokens_details.cached_tokens
    )
    summed.output_tokens_details.reasoning_tokens = _add_counts(
        total.output_tokens_details.reasoning_tokens, additional.output_tokens_details.reasoning_tokens
    )
    return summed


__all__ = [
    "accumulate_response_usage",
    "NeMoGymResponseInput",
    "RATE_LIMIT_ERROR_CODES",
    "RETRY_ERROR_CODES",
    "NeMoGymAsyncOpenAI",
    "NeMoGymChatCompletion",
    "NeMoGymChatCompletionCreateParamsNonStreaming",
    "NeMoGymChatCompletionMessage",
    "NeMoGymChoice",
    "NeMoGymEasyInputMessage",
    "NeMoGymFunctionCallOutput",
    "NeMoGymMessage",
    "NeMoGymReasoningContent",
    "NeMoGymResponse",
    "NeMoGymResponseCreateParamsNonStreaming",
    "NeMoGymResponseFunctionToolCall",
    "NeMoGymResponseInputItem",
    "NeMoGymResponseOutputItem",
    "NeMoGymResponseOutputMessage",
    "NeMoGymResponseOutputRefusal",
    "NeMoGymResponseOutputText",
    "NeMoGymResponseReasoningItem",
    "NeMoGymResponseUsage",
    "NeMoGymSummary",
]
