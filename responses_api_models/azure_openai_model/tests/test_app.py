"""azure_openai_model over real HTTP: our server on uvicorn, a scripted Azure-shaped deployment on
aiohttp, httpx as the agent."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from omegaconf import OmegaConf

from nemo_gym.client import ServerClient
from nemo_gym.testing.scripted_openai import ScriptedOpenAI
from responses_api_models.azure_openai_model.app import (
    AzureOpenAIModel,
    AzureOpenAIModelConfig,
)

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


class AzureDeployment(ScriptedOpenAI):
    """Chat Completions under Azure's deployment route; records each call and the peak concurrency."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.calls: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def _app(self) -> web.Application:
        app = super()._app()
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._azure_chat)
        return app

    async def _azure_chat(self, request: web.Request) -> web.Response:
        self.calls.append(
            {
                "path": request.path,
                "query": dict(request.query),
                "api_key": request.headers.get("api-key"),
                "authorization": request.headers.get("Authorization"),
            }
        )
        self.in_flight += 1  # one event loop: no lock needed
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._chat(request)
        finally:
            self.in_flight -= 1


@pytest.fixture
def start_model(serve: Callable[[Any], str]) -> Callable[..., str]:
    def start(deployment: AzureDeployment, **config: Any) -> str:
        endpoint = deployment.url.removesuffix("/v1")
        server = AzureOpenAIModel(
            config=AzureOpenAIModelConfig(
                name="policy_model",
                openai_base_url=endpoint,
                openai_api_key="secret-key",
                openai_model="gpt-4o-mini-prod",
                api_version="2024-10-21",
                **config,
            ),
            server_client=ServerClient("http://127.0.0.1:9"),
        )
        return serve(server.setup_webserver())

    return start


@pytest.fixture
def deployment() -> Iterator[AzureDeployment]:
    with AzureDeployment() as upstream:
        yield upstream


def test_responses_go_to_the_deployment_url_with_api_version_and_api_key(deployment, start_model):
    model_url = start_model(deployment)
    params = {"input": [{"role": "user", "content": "Weather in Paris?"}], "tools": [WEATHER_TOOL]}
    answer = httpx.post(f"{model_url}/v1/responses", json=params, timeout=30)

    assert answer.status_code == 200
    response = answer.json()
    [call] = response["output"]
    assert call["type"] == "function_call"
    assert call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "San Francisco"}
    assert response["usage"]["total_tokens"] == 120

    [seen] = deployment.calls
    assert seen["path"] == "/openai/deployments/gpt-4o-mini-prod/chat/completions"
    assert seen["query"] == {"api-version": "2024-10-21"}
    assert seen["api_key"] == "secret-key"
    assert seen["authorization"] is None
    [sent] = deployment.requests
    assert sent["tools"][0]["function"]["name"] == "get_weather"


def test_chat_completions_pass_through(deployment, start_model):
    model_url = start_model(deployment)
    answer = httpx.post(
        f"{model_url}/v1/chat/completions",
        json={"model": "ignored", "messages": [{"role": "user", "content": "Hi"}]},
        timeout=30,
    )

    assert answer.status_code == 200
    assert answer.json()["object"] == "chat.completion"
    assert answer.json()["choices"][0]["message"]["content"]
    assert deployment.calls[0]["path"] == "/openai/deployments/gpt-4o-mini-prod/chat/completions"
    assert deployment.requests[0]["model"] == "gpt-4o-mini-prod"


def test_num_concurrent_requests_bounds_in_flight_upstream_calls(start_model):
    with AzureDeployment(latency_s=0.2) as slow:
        model_url = start_model(slow, num_concurrent_requests=3)

        async def burst() -> list[int]:
            async with httpx.AsyncClient(base_url=model_url, timeout=30) as client:
                answers = await asyncio.gather(
                    *(client.post("/v1/responses", json={"input": f"question {n}"}) for n in range(12))
                )
            return [answer.status_code for answer in answers]

        statuses = asyncio.run(burst())

    assert statuses == [200] * 12
    assert len(slow.calls) == 12
    assert slow.max_in_flight == 3


def test_failing_deployment_is_a_502_naming_it(start_model):
    with AzureDeployment(fault_every=1, fault_status=503) as failing:
        model_url = start_model(failing, max_attempts=2)
        answer = httpx.post(f"{model_url}/v1/responses", json={"input": "Hi"}, timeout=30)

    assert answer.status_code == 502
    message = answer.json()["error"]["message"]
    assert "/openai/deployments/gpt-4o-mini-prod/chat/completions" in message
    assert "503" in message
    assert "secret-key" not in message
    assert len(failing.calls) == 2


def test_shipped_config_validates():
    path = Path(__file__).parents[1] / "configs" / "azure_openai_model.yaml"
    env = OmegaConf.create(
        {"policy_base_url": "https://x.openai.azure.com", "policy_api_key": "k", "policy_model_name": "my-deployment"}
    )
    merged = OmegaConf.merge(env, OmegaConf.load(path))
    values = OmegaConf.to_container(merged, resolve=True)["policy_model"]["responses_api_models"]["azure_openai_model"]
    config = AzureOpenAIModelConfig.model_validate(values)
    assert config.openai_base_url == "https://x.openai.azure.com"
    assert config.openai_model == "my-deployment"
