"""Model servers: OpenAI-compatible `/v1/responses` and `/v1/chat/completions` in front of some backend."""

from __future__ import annotations

from typing import Any, ClassVar

from fastapi import FastAPI, Request
from pydantic import Field, SecretStr

from nemo_gym.client import PoolLimits, Timeouts
from nemo_gym.openai_types import ChatCompletionCreateParams, ResponseCreateParams
from nemo_gym.retry import RetryPolicy
from nemo_gym.servers.base import BaseServerConfig, SimpleServer


class BaseResponsesAPIModelConfig(BaseServerConfig):
    pass


class UpstreamModelConfig(BaseResponsesAPIModelConfig):
    """Settings shared by every model server that forwards to an HTTP upstream (openai_model,
    vllm_model, azure_openai_model): one set of timeouts, one cap on the answer's size and one retry
    policy, in the vocabulary of `nemo_gym.retry`.

    The upstream's URL and key keep each implementation's NeMo Gym field names (`openai_base_url`
    and `openai_api_key`, or vLLM's `base_url` and `api_key`), so existing configs load unchanged;
    a subclass names them through `upstream_base_urls` and `upstream_api_key`. Keys are `SecretStr`:
    a repr, a log line or a dump of the config shows `**********`, and the value is revealed only
    where the request header is built (`nemo_gym.servers.upstream`).
    """

    max_attempts: int = Field(5, ge=1)
    """Attempts per upstream call (per replica for vllm_model) for connection errors, 408, 429 and
    5xx. Any other 4xx is not retried: it would fail the same way."""
    request_timeout_s: float = Field(900.0, gt=0)
    """Deadline for one upstream attempt, from sending the request to the last byte of the answer
    (900 s). Long generations answer late but must not hang forever: an upstream that trickles its
    answer a byte at a time, or sends keepalives without end, is cut here too."""
    read_idle_timeout_s: float = Field(120.0, gt=0)
    """Once the upstream has begun its answer (status and headers in), the longest silence between two
    pieces of the body (120 s). A non-streaming upstream says nothing while it generates and then sends
    its answer at once, and an upstream that sends keepalive bytes (whitespace, SSE comments) sends
    them every few seconds, so neither is cut; a body stalled halfway fails in 2 minutes instead of
    holding the call until `request_timeout_s`. The wait for the headers is bounded by
    `request_timeout_s` alone."""
    max_upstream_response_bytes: int = Field(64 * 1024 * 1024, ge=1)
    """Largest upstream answer read (64 MiB; a long generation with logprobs is a few MB). A longer
    one fails the call with one error naming the upstream URL and this cap, and is not retried (it
    would come back as large): refused from its Content-Length when it has one, else reading stops at
    the cap, so a runaway upstream costs at most this much memory per call."""
    connect_timeout_s: float = Field(30.0, gt=0)
    """Time to get a connection to the upstream."""
    retry_backoff_initial_s: float = Field(0.5, ge=0)
    """Ceiling of the first wait between attempts; doubles per attempt (with jitter)."""
    retry_backoff_max_s: float = Field(10.0, ge=0)
    """Largest wait between attempts, unless the upstream asks for more with Retry-After."""
    max_retry_after_s: float = Field(60.0, ge=0)
    """Longest Retry-After honoured (60 s covers per-minute quotas); a longer one is cut to this."""

    @property
    def upstream_base_urls(self) -> list[str]:
        """Base URLs of the upstream (one, or vLLM's replicas), without a trailing slash."""
        raise NotImplementedError(f"{type(self).__name__} must say where its upstream is")

    @property
    def upstream_api_key(self) -> SecretStr:
        """The key sent upstream; empty when the upstream needs none."""
        return SecretStr("")

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            backoff_initial_s=self.retry_backoff_initial_s,
            backoff_max_s=self.retry_backoff_max_s,
            max_retry_after_s=self.max_retry_after_s,
        )

    @property
    def timeouts(self) -> Timeouts:
        return Timeouts(
            connect_s=self.connect_timeout_s,
            read_s=self.request_timeout_s,
            total_s=self.request_timeout_s,
            body_idle_s=self.read_idle_timeout_s,
        )

    @property
    def limits(self) -> PoolLimits:
        return PoolLimits(max_response_bytes=self.max_upstream_response_bytes)


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
