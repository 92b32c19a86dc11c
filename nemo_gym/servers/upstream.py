"""A model server's calls to its upstream (an OpenAI-compatible HTTP API): auth, retries, errors, shapes.

openai_model, vllm_model and azure_openai_model all call their upstream through `UpstreamClient`,
so the three agree on what a failure becomes:

  * retried here, per the config's `RetryPolicy` (`nemo_gym.retry`): refused or dropped
    connections, timeouts, 408, 429 and 5xx, with backoff and Retry-After;
  * a failure that survived its attempts, or an upstream 4xx (never retried: it would fail the same
    way), raises `HTTPStatusError` carrying the upstream's status, naming this server and the
    upstream URL, with a short excerpt of the upstream's message (the API key redacted, in case the
    upstream echoes it). The server's error handler answers 502 for a retryable status and 424 for
    the rest, so the collector retries the first and writes one failure record for the second;
  * a 2xx whose body is not the shape promised (`output: [1, 2, 3]`, `usage: "lots"`) raises
    `InvalidResponseError` naming this server and the field, instead of an AttributeError deep in
    the agent. The shapes below check only what our code relies on and allow any extra key.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from nemo_gym.client import HttpClient, HttpResult, error_excerpt, parse_retry_after
from nemo_gym.errors import HTTPStatusError, InvalidResponseError
from nemo_gym.servers.model import UpstreamModelConfig

JSONDict = dict[str, Any]
AuthScheme = Literal["bearer", "api-key"]
MAX_SHAPE_PROBLEMS = 3


# ---- shapes -------------------------------------------------------------------------------------
class _Shape(BaseModel):
    model_config = ConfigDict(extra="allow")

    what: ClassVar[str] = "answer"


class _TextPart(_Shape):
    type: str | None = None
    text: str | None = None


class _OutputItem(_Shape):
    type: str | None = None
    role: str | None = None
    content: str | list[_TextPart] | None = None
    summary: list[_TextPart] | None = None
    name: str | None = None
    arguments: str | None = None
    call_id: str | None = None

    @model_validator(mode="after")
    def _function_call_is_complete(self) -> _OutputItem:
        if self.type == "function_call" and (self.name is None or self.arguments is None):
            raise ValueError("a function_call item needs a string `name` and `arguments`")
        return self


class _TokenDetails(_Shape):
    cached_tokens: int | None = None
    reasoning_tokens: int | None = None


class _ResponseUsage(_Shape):
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None
    input_tokens_details: _TokenDetails | None = None
    output_tokens_details: _TokenDetails | None = None


class ResponseShape(_Shape):
    """A Responses API `response`, as far as the agent reads it."""

    what: ClassVar[str] = "Responses API response"

    output: list[_OutputItem]
    usage: _ResponseUsage | None = None
    incomplete_details: JSONDict | None = None


class _ToolCallFunction(_Shape):
    name: str
    arguments: str | JSONDict = ""


class _ToolCall(_Shape):
    id: str | None = None
    function: _ToolCallFunction


class _LogprobEntry(_Shape):
    token: str = ""
    logprob: float


class _Logprobs(_Shape):
    content: list[_LogprobEntry] | None = None


class _ChatMessage(_Shape):
    role: str | None = None
    content: str | list[_TextPart] | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(_Shape):
    message: _ChatMessage
    finish_reason: str | None = None
    logprobs: _Logprobs | None = None
    token_ids: list[int] | None = None


class _ChatUsage(_Shape):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    prompt_tokens_details: _TokenDetails | None = None
    completion_tokens_details: _TokenDetails | None = None


class ChatCompletionShape(_Shape):
    """A Chat Completions answer, as far as our conversion reads it."""

    what: ClassVar[str] = "chat completion"

    choices: list[_Choice] = Field(min_length=1)
    usage: _ChatUsage | None = None
    prompt_token_ids: list[int] | None = None


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_url=False)[:MAX_SHAPE_PROBLEMS]:
        field = ".".join(str(part) for part in item["loc"]) or "(the body)"
        got = repr(item.get("input"))
        got = got if len(got) <= 60 else got[:60] + "..."
        problems.append(f"field `{field}`: {item['msg']} (got {got})")
    more = len(error.errors()) - MAX_SHAPE_PROBLEMS
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")


# ---- client -------------------------------------------------------------------------------------
class UpstreamClient:
    """One model server's pooled client to its upstream. Create it in `on_startup`, close in `on_shutdown`."""

    def __init__(
        self,
        server_name: str,
        config: UpstreamModelConfig,
        *,
        auth: AuthScheme = "bearer",
        max_concurrent_requests: int | None = None,
    ):
        self.server_name = server_name
        self._http = HttpClient(timeouts=config.timeouts, retry=config.retry_policy)
        self._api_key = config.upstream_api_key
        self.headers = _auth_headers(config.upstream_api_key, auth)
        self._limit = asyncio.Semaphore(max_concurrent_requests) if max_concurrent_requests else None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def post(self, url: str, payload: JSONDict, *, params: dict[str, str] | None = None) -> HttpResult:
        """POST with retries; the final result whatever its status (see `raise_for_status`)."""
        if self._limit is None:
            return await self._http.request("POST", url, json=payload, headers=self.headers, params=params)
        async with self._limit:
            return await self._http.request("POST", url, json=payload, headers=self.headers, params=params)

    def raise_for_status(self, result: HttpResult) -> HttpResult:
        if result.ok:
            return result
        message = self._redact(error_excerpt(result.body, limit=300))
        raise HTTPStatusError(
            f"model server {self.server_name!r}: upstream {result.url} answered HTTP {result.status}: {message}",
            status_code=result.status,
            body=self._redact(result.text[:2000]),
            retry_after=parse_retry_after(result.headers.get("Retry-After")),
        )

    def parse(self, result: HttpResult, shape: type[_Shape]) -> JSONDict:
        """The body of a 2xx `result` as a dict, checked against `shape` (the dict is returned, not
        the model: callers forward or convert the upstream's own keys)."""
        try:
            body = result.json()
        except InvalidResponseError as error:
            raise InvalidResponseError(f"model server {self.server_name!r}: {error}") from None
        try:
            shape.model_validate(body)
        except ValidationError as error:
            raise InvalidResponseError(
                f"model server {self.server_name!r}: upstream {result.url} answered a malformed "
                f"{shape.what}: {_describe(error)}"
            ) from None
        return body

    def _redact(self, text: str) -> str:
        # Some upstreams echo the key they rejected; it must not travel on into failure records.
        key = self._api_key.get_secret_value()
        return text.replace(key, "***") if key else text


def _auth_headers(api_key: SecretStr, scheme: AuthScheme) -> dict[str, str]:
    # The one place a key is revealed: the header it travels in.
    key = api_key.get_secret_value()
    if not key:
        return {}
    return {"api-key": key} if scheme == "api-key" else {"Authorization": f"Bearer {key}"}
