"""azure_openai_model: the Responses API served through an Azure OpenAI deployment's Chat Completions.

`/v1/responses` converts the request to Chat Completions (`nemo_gym.conversion`), posts it to
`{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...` with the `api-key`
header, and converts the completion back. `/v1/chat/completions` is a pass-through to the same URL.

Azure deployments have a per-minute quota, so `num_concurrent_requests` caps in-flight calls from
this process; 429s that still happen are retried with backoff, honouring Azure's `Retry-After`.
The upstream client is our aiohttp `HttpClient`, not the SDK's httpx pool (see `nemo_gym.client`).
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from fastapi import Request
from pydantic import Field

from nemo_gym.client import HttpClient, HttpResult, RetryPolicy, Timeouts
from nemo_gym.conversion import (
    chat_completion_to_response,
    context_length_exceeded,
    empty_incomplete_completion,
    responses_to_chat_params,
)
from nemo_gym.errors import HTTPStatusError
from nemo_gym.openai_types import ChatCompletionCreateParams, ResponseCreateParams
from nemo_gym.servers.model import BaseResponsesAPIModelConfig, SimpleResponsesAPIModel

JSONDict = dict[str, Any]


class AzureOpenAIModelConfig(BaseResponsesAPIModelConfig):
    openai_base_url: str
    """The Azure endpoint, e.g. https://my-resource.openai.azure.com (no /openai, no /v1)."""
    openai_api_key: str
    """Sent as the `api-key` header."""
    openai_model: str
    """The deployment name (Azure routes by deployment, not by model name)."""
    api_version: str = "2024-10-21"
    """Sent as the `api-version` query parameter. Default: the GA version current when written."""
    num_concurrent_requests: int = Field(8, ge=1)
    """Cap on in-flight calls to the deployment from this server, to stay inside its quota."""
    max_attempts: int = Field(5, ge=1)
    """Attempts per call for connection errors, 429 and 5xx (backoff with jitter, Retry-After)."""
    request_timeout_s: float = Field(900.0, gt=0)
    """Read timeout per upstream call."""


class AzureOpenAIModel(SimpleResponsesAPIModel):
    config: AzureOpenAIModelConfig

    async def on_startup(self) -> None:
        self._upstream = HttpClient(
            timeouts=Timeouts(read_s=self.config.request_timeout_s),
            retry=RetryPolicy(max_attempts=self.config.max_attempts),
        )
        endpoint = self.config.openai_base_url.rstrip("/")
        deployment = quote(self.config.openai_model, safe="")
        self._chat_url = f"{endpoint}/openai/deployments/{deployment}/chat/completions"
        self._query = {"api-version": self.config.api_version}
        self._headers = {"api-key": self.config.openai_api_key}
        self._limit = asyncio.Semaphore(self.config.num_concurrent_requests)

    async def on_shutdown(self) -> None:
        await self._upstream.aclose()

    async def responses(self, request: Request, body: ResponseCreateParams) -> Any:
        params = body.model_dump(exclude_unset=True)
        completion = await self._complete(responses_to_chat_params(params))
        return chat_completion_to_response(completion, request_params=params, model=self.config.openai_model)

    async def chat_completions(self, request: Request, body: ChatCompletionCreateParams) -> Any:
        return await self._complete(body.model_dump(exclude_unset=True))

    async def _complete(self, chat_params: JSONDict) -> JSONDict:
        """The deployment's completion, or a synthetic empty one when the conversation no longer
        fits the context (the agent then ends the episode instead of failing the rollout)."""
        payload = chat_params | {"model": self.config.openai_model}
        async with self._limit:
            result = await self._upstream.request(
                "POST", self._chat_url, json=payload, headers=self._headers, params=self._query
            )
        if result.ok:
            return result.json()
        if context_length_exceeded(result.status, result.text):
            return empty_incomplete_completion()
        raise self._status_error(result)

    def _status_error(self, result: HttpResult) -> HTTPStatusError:
        # The URL without the query: enough to name the deployment, and the key is never in it.
        return HTTPStatusError(
            f"upstream {result.url} answered HTTP {result.status}: {result.text[:500]}",
            status_code=result.status,
            body=result.text,
        )


if __name__ == "__main__":
    AzureOpenAIModel.run_webserver()
