"""azure_openai_model: the Responses API served through an Azure OpenAI deployment's Chat Completions.

`/v1/responses` converts the request to Chat Completions (`nemo_gym.conversion`), posts it to
`{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...` with the `api-key`
header, and converts the completion back. `/v1/chat/completions` is a pass-through to the same URL.

Azure deployments have a per-minute quota, so `num_concurrent_requests` caps in-flight calls from
this process; 429s that still happen are retried with backoff, honouring Azure's `Retry-After`
(up to `max_retry_after_s`). Upstream calls, errors and shape checks are those of every upstream
model server (`nemo_gym.servers.upstream`).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import Request
from pydantic import Field, SecretStr

from nemo_gym.conversion import (
    chat_completion_to_response,
    context_length_exceeded,
    empty_incomplete_completion,
    responses_to_chat_params,
)
from nemo_gym.openai_types import ChatCompletionCreateParams, ResponseCreateParams
from nemo_gym.servers.model import SimpleResponsesAPIModel, UpstreamModelConfig
from nemo_gym.servers.upstream import UpstreamClient
from nemo_gym.servers.upstream_shapes import CHAT_COMPLETION

JSONDict = dict[str, Any]


class AzureOpenAIModelConfig(UpstreamModelConfig):
    openai_base_url: str
    """The Azure endpoint, e.g. https://my-resource.openai.azure.com (no /openai, no /v1)."""
    openai_api_key: SecretStr
    """Sent as the `api-key` header."""
    openai_model: str
    """The deployment name (Azure routes by deployment, not by model name)."""
    api_version: str = "2024-10-21"
    """Sent as the `api-version` query parameter. Default: the GA version current when written."""
    num_concurrent_requests: int = Field(8, ge=1)
    """Cap on in-flight calls to the deployment from this server, to stay inside its quota."""

    @property
    def upstream_base_urls(self) -> list[str]:
        return [self.openai_base_url.rstrip("/")]

    @property
    def upstream_api_key(self) -> SecretStr:
        return self.openai_api_key


class AzureOpenAIModel(SimpleResponsesAPIModel):
    config: AzureOpenAIModelConfig

    async def on_startup(self) -> None:
        self._upstream = UpstreamClient(
            self.config.name, self.config, auth="api-key", max_concurrent_requests=self.config.num_concurrent_requests
        )
        endpoint = self.config.upstream_base_urls[0]
        deployment = quote(self.config.openai_model, safe="")
        self._chat_url = f"{endpoint}/openai/deployments/{deployment}/chat/completions"
        self._query = {"api-version": self.config.api_version}

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
        # The error names the URL without the query: enough to name the deployment.
        result = await self._upstream.post(self._chat_url, payload, params=self._query)
        if not result.ok and context_length_exceeded(result.status, result.text):
            return empty_incomplete_completion()
        return self._upstream.parse(self._upstream.raise_for_status(result), CHAT_COMPLETION)


if __name__ == "__main__":
    AzureOpenAIModel.run_webserver()
