"""Model servers: OpenAI-compatible `/v1/responses` and `/v1/chat/completions` in front of some backend."""

from __future__ import annotations

from typing import Any, ClassVar

from fastapi import FastAPI, Request

from nemo_gym.openai_types import ChatCompletionCreateParams, ResponseCreateParams
from nemo_gym.servers.base import BaseServerConfig, SimpleServer


class BaseResponsesAPIModelConfig(BaseServerConfig):
    pass


class SimpleResponsesAPIModel(SimpleServer):
    """Implement `responses` and `chat_completions`; both return JSON-shaped dicts (or models)."""

    config: BaseResponsesAPIModelConfig
    server_kind: ClassVar[str] = "responses_api_models"

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/v1/responses")(self.responses)
        app.post("/v1/chat/completions")(self.chat_completions)
        return app

    async def responses(self, request: Request, body: ResponseCreateParams) -> Any:
        """Answer a Responses API request. Every model server must override this."""
        raise NotImplementedError(f"{type(self).__name__} does not serve /v1/responses")

    async def chat_completions(self, request: Request, body: ChatCompletionCreateParams) -> Any:
        """Answer a Chat Completions request. Every model server must override this."""
        raise NotImplementedError(f"{type(self).__name__} does not serve /v1/chat/completions")
