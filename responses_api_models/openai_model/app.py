"""openai_model: `/v1/responses` and `/v1/chat/completions` passed through to any OpenAI-compatible
endpoint, with the configured model name and API key forced onto every request.

The upstream client is our aiohttp-based `HttpClient` (not the openai SDK's default httpx pool),
with bounded retries, exponential backoff with jitter and `Retry-After` for connection errors, 429
and 5xx. An optional `max_concurrent_requests` caps in-flight upstream calls.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request
from starlette.responses import Response as StarletteResponse

from nemo_gym.client import HttpClient, RetryPolicy, Timeouts
from nemo_gym.errors import HTTPStatusError, InvalidResponseError
from nemo_gym.openai_types import ChatCompletionCreateParams, ResponseCreateParams
from nemo_gym.servers.model import BaseResponsesAPIModelConfig, SimpleResponsesAPIModel


class OpenAIModelConfig(BaseResponsesAPIModelConfig):
    openai_base_url: str
    """Base URL including `/v1`, e.g. https://api.openai.com/v1."""
    openai_api_key: str = ""
    openai_model: str
    max_concurrent_requests: int | None = None
    """Cap on in-flight upstream requests (None = no cap)."""
    max_attempts: int = 5
    """Attempts per upstream call for connection errors, 429 and 5xx."""
    request_timeout_s: float = 900.0


class OpenAIModel(SimpleResponsesAPIModel):
    config: OpenAIModelConfig

    async def on_startup(self) -> None:
        self._upstream = HttpClient(
            timeouts=Timeouts(read_s=self.config.request_timeout_s),
            retry=RetryPolicy(max_attempts=self.config.max_attempts),
        )
        self._headers = {"Authorization": f"Bearer {self.config.openai_api_key}"} if self.config.openai_api_key else {}
        self._limit = asyncio.Semaphore(self.config.max_concurrent_requests) if self.config.max_concurrent_requests else None

    async def on_shutdown(self) -> None:
        await self._upstream.aclose()

    async def _post(self, path: str, payload: dict[str, Any]) -> Any:
        url = f"{self.config.openai_base_url.rstrip('/')}/{path}"
        if self._limit is None:
            result = await self._upstream.request("POST", url, json=payload, headers=self._headers)
        else:
            async with self._limit:
                result = await self._upstream.request("POST", url, json=payload, headers=self._headers)
        if not result.ok:
            raise HTTPStatusError(f"upstream {url} answered HTTP {result.status}: {result.text[:500]}",
                                  status_code=result.status, body=result.text)
        return result

    async def responses(self, request: Request, body: ResponseCreateParams) -> Any:
        payload = body.model_dump(exclude_unset=True) | {"model": self.config.openai_model}
        result = await self._post("responses", payload)
        # Check the shape the agent relies on, then pass the upstream's bytes through untouched:
        # re-validating and re-serializing every Response was measurable CPU per rollout.
        parsed = result.json()
        if not isinstance(parsed, dict) or not isinstance(parsed.get("output"), list):
            raise InvalidResponseError(f"upstream {self.config.openai_base_url} returned a response without an output list")
        return StarletteResponse(result.body, media_type="application/json")

    async def chat_completions(self, request: Request, body: ChatCompletionCreateParams) -> Any:
        payload = body.model_dump(exclude_unset=True) | {"model": self.config.openai_model}
        result = await self._post("chat/completions", payload)
        return result.json()


if __name__ == "__main__":
    OpenAIModel.run_webserver()
