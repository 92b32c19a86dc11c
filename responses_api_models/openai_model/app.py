"""openai_model: `/v1/responses` and `/v1/chat/completions` passed through to any OpenAI-compatible
endpoint, with the configured model name and API key forced onto every request.

Upstream calls go through `nemo_gym.servers.upstream.UpstreamClient` (our aiohttp client, not the
openai SDK's httpx pool): connection errors, 408, 429 and 5xx are retried with backoff and
Retry-After; another 4xx is passed on as a failure the collector does not retry; an answer of the
wrong shape is a 502 naming the field. An optional `max_concurrent_requests` caps in-flight calls.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import Field, SecretStr
from starlette.responses import Response as StarletteResponse

from nemo_gym.openai_types import ChatCompletionCreateParams, ResponseCreateParams
from nemo_gym.servers.model import SimpleResponsesAPIModel, UpstreamModelConfig
from nemo_gym.servers.upstream import UpstreamClient
from nemo_gym.servers.upstream_shapes import CHAT_COMPLETION, RESPONSE


class OpenAIModelConfig(UpstreamModelConfig):
    openai_base_url: str
    """Base URL including `/v1`, e.g. https://api.openai.com/v1."""
    openai_api_key: SecretStr = SecretStr("")
    """Sent as a bearer token when set."""
    openai_model: str
    max_concurrent_requests: int | None = Field(None, ge=1)
    """Cap on in-flight upstream requests (None = no cap)."""

    @property
    def upstream_base_urls(self) -> list[str]:
        return [self.openai_base_url.rstrip("/")]

    @property
    def upstream_api_key(self) -> SecretStr:
        return self.openai_api_key


class OpenAIModel(SimpleResponsesAPIModel):
    config: OpenAIModelConfig

    async def on_startup(self) -> None:
        self._upstream = UpstreamClient(
            self.config.name, self.config, max_concurrent_requests=self.config.max_concurrent_requests
        )
        self._base_url = self.config.upstream_base_urls[0]

    async def on_shutdown(self) -> None:
        await self._upstream.aclose()

    async def responses(self, request: Request, body: ResponseCreateParams) -> Any:
        payload = body.model_dump(exclude_unset=True) | {"model": self.config.openai_model}
        result = self._upstream.raise_for_status(await self._upstream.post(f"{self._base_url}/responses", payload))
        # Check the shape the agent relies on, then pass the upstream's bytes through untouched:
        # re-serializing every Response was measurable CPU per rollout.
        self._upstream.check(result, RESPONSE)
        return StarletteResponse(result.body, media_type="application/json")

    async def chat_completions(self, request: Request, body: ChatCompletionCreateParams) -> Any:
        payload = body.model_dump(exclude_unset=True) | {"model": self.config.openai_model}
        result = self._upstream.raise_for_status(
            await self._upstream.post(f"{self._base_url}/chat/completions", payload)
        )
        self._upstream.check(result, CHAT_COMPLETION)
        return StarletteResponse(result.body, media_type="application/json")


if __name__ == "__main__":
    OpenAIModel.run_webserver()
