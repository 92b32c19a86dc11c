"""What every upstream model server (openai_model, vllm_model, azure_openai_model) promises, each run
on loopback against a scripted upstream: one retry vocabulary, upstream 4xx passed on as a failure
nobody retries, wrong-shaped answers named by field, and API keys that never show in a repr."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiohttp import web

from nemo_gym.client import ServerClient
from nemo_gym.retry import classify_status
from nemo_gym.servers.model import SimpleResponsesAPIModel, UpstreamModelConfig
from nemo_gym.testing.inprocess import PeakRss, ThreadedServer
from nemo_gym.testing.scripted_openai import ScriptedOpenAI, answer_after_keepalives, huge_answer, trickled_answer
from responses_api_models.azure_openai_model.app import AzureOpenAIModel, AzureOpenAIModelConfig
from responses_api_models.openai_model.app import OpenAIModel, OpenAIModelConfig
from responses_api_models.vllm_model.app import VLLMModel, VLLMModelConfig

KEY = "sk-never-in-a-repr-0123456789"
TURN = {"input": [{"role": "user", "content": "Weather in Oslo?"}]}
CHAT = {"messages": [{"role": "user", "content": "Weather in Oslo?"}]}
FAST_RETRY = {"max_attempts": 3, "retry_backoff_initial_s": 0.01, "retry_backoff_max_s": 0.02}


class Upstream(ScriptedOpenAI):
    """The scripted upstream, also under Azure's deployment route; records each call's auth headers."""

    def __init__(self) -> None:
        super().__init__()
        self.auth: list[str | None] = []

    def _app(self) -> web.Application:
        app = super()._app()
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._chat)
        return app

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.auth.append(request.headers.get("Authorization") or request.headers.get("api-key"))
        return await super()._chat(request)

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        self.auth.append(request.headers.get("Authorization") or request.headers.get("api-key"))
        return await super()._responses(request)


@dataclass
class Implementation:
    name: str
    build: Callable[[str, dict[str, Any]], SimpleResponsesAPIModel]
    speaks_chat_upstream: bool  # /v1/responses becomes a chat completion upstream
    expected_auth: str


IMPLEMENTATIONS = [
    Implementation(
        "openai_model",
        lambda url, extra: OpenAIModel(
            config=OpenAIModelConfig(
                name="policy_model", openai_base_url=url, openai_api_key=KEY, openai_model="m", **extra
            ),
            server_client=ServerClient("http://127.0.0.1:9"),
        ),
        False,
        f"Bearer {KEY}",
    ),
    Implementation(
        "vllm_model",
        lambda url, extra: VLLMModel(
            config=VLLMModelConfig(name="policy_model", base_url=url, api_key=KEY, model="m", **extra),
            server_client=ServerClient("http://127.0.0.1:9"),
        ),
        True,
        f"Bearer {KEY}",
    ),
    Implementation(
        "azure_openai_model",
        lambda url, extra: AzureOpenAIModel(
            config=AzureOpenAIModelConfig(
                name="policy_model",
                openai_base_url=url.removesuffix("/v1"),
                openai_api_key=KEY,
                openai_model="dep",
                **extra,
            ),
            server_client=ServerClient("http://127.0.0.1:9"),
        ),
        True,
        KEY,
    ),
]


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


@pytest.fixture(params=IMPLEMENTATIONS, ids=[impl.name for impl in IMPLEMENTATIONS])
def model(request: pytest.FixtureRequest, upstream: Upstream) -> Iterator[tuple[Implementation, str]]:
    implementation: Implementation = request.param
    server = implementation.build(upstream.url, FAST_RETRY)
    with ThreadedServer.of(server) as running:
        yield implementation, running.url


def test_the_three_model_servers_share_one_upstream_config_base():
    for config_class in (OpenAIModelConfig, VLLMModelConfig, AzureOpenAIModelConfig):
        assert issubclass(config_class, UpstreamModelConfig)
        for field in (
            "max_attempts",
            "request_timeout_s",
            "connect_timeout_s",
            "retry_backoff_initial_s",
            "retry_backoff_max_s",
            "max_retry_after_s",
        ):
            assert field in config_class.model_fields


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS, ids=[impl.name for impl in IMPLEMENTATIONS])
def test_the_api_key_never_shows_in_a_repr_or_a_dump_of_the_config(implementation):
    config = implementation.build("http://127.0.0.1:9/v1", {}).config
    assert isinstance(config, UpstreamModelConfig)
    for shown in (repr(config), str(config), config.model_dump_json(), json.dumps(config.model_dump(mode="json"))):
        assert KEY not in shown
    assert config.upstream_api_key.get_secret_value() == KEY


def test_the_key_travels_in_the_auth_header(model, upstream):
    implementation, url = model
    assert httpx.post(f"{url}/v1/responses", json=TURN, timeout=30).status_code == 200
    assert upstream.auth == [implementation.expected_auth]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_an_upstream_4xx_is_tried_once_and_passed_on_as_a_424_with_its_status_and_message(model, upstream, status):
    implementation, url = model
    upstream.fault_every, upstream.fault_status = 1, status
    upstream.fault_body = json.dumps({"error": {"message": f"nope, and your key {KEY} is wrong"}}).encode()
    answer = httpx.post(f"{url}/v1/responses", json=TURN, timeout=30)
    assert len(upstream.requests) == 1  # not retried: it would fail the same way
    assert answer.status_code == 424 and not classify_status(424).retryable
    error = answer.json()["error"]
    assert error["status_code"] == status
    assert "'policy_model': upstream" in error["message"] and f"HTTP {status}: nope" in error["message"]
    assert KEY not in answer.text


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_a_retryable_upstream_status_is_retried_max_attempts_times_then_a_502(model, upstream, status):
    implementation, url = model
    upstream.fault_every, upstream.fault_status = 1, status
    answer = httpx.post(f"{url}/v1/responses", json=TURN, timeout=30)
    assert len(upstream.requests) == FAST_RETRY["max_attempts"]
    assert answer.status_code == 502 and classify_status(502).retryable
    assert answer.json()["error"]["status_code"] == status


RESPONSE_MANGLES = [(lambda a: a | {"output": [1, 2, 3]}, "output.0"), (lambda a: a | {"usage": "lots"}, "usage")]
CHAT_MANGLES = [
    (lambda a: a | {"choices": [1, 2, 3]}, "choices.0"),
    (lambda a: a | {"usage": "lots"}, "usage"),
    (lambda a: a | {"choices": []}, "choices"),
]


@pytest.mark.parametrize("case", range(3))
def test_a_wrong_shaped_answer_is_a_502_naming_the_server_and_the_field(model, upstream, case):
    implementation, url = model
    mangles = CHAT_MANGLES if implementation.speaks_chat_upstream else RESPONSE_MANGLES
    mangle, field = mangles[case % len(mangles)]
    upstream.mangle = mangle
    answer = httpx.post(f"{url}/v1/responses", json=TURN, timeout=30)
    assert answer.status_code == 502
    message = answer.json()["error"]["message"]
    assert message.startswith("model server 'policy_model': upstream") and f"field `{field}`" in message


def test_a_wrong_shaped_chat_completion_is_a_502_on_the_chat_endpoint_too(model, upstream):
    implementation, url = model
    upstream.mangle = lambda answer: answer | {"choices": [{"message": {"role": "assistant", "tool_calls": 7}}]}
    answer = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=30)
    assert answer.status_code == 502
    assert "field `choices.0.message.tool_calls`" in answer.json()["error"]["message"]


# ---- bounded answers: size, stalls, trickles ------------------------------------------------------
MiB = 1024 * 1024
CAP = 16 * MiB
BOUNDED = FAST_RETRY | {"max_upstream_response_bytes": CAP, "read_idle_timeout_s": 0.3}


@pytest.fixture(params=IMPLEMENTATIONS, ids=[impl.name for impl in IMPLEMENTATIONS])
def bounded_model(request: pytest.FixtureRequest, upstream: Upstream) -> Iterator[tuple[Implementation, str]]:
    """A model server with a 16 MiB answer cap and a 0.3 s read idle timeout (no rollout deadline anywhere)."""
    implementation: Implementation = request.param
    with ThreadedServer.of(implementation.build(upstream.url, BOUNDED)) as running:
        yield implementation, running.url


def test_the_answer_cap_and_the_idle_timeout_have_defaults():
    config = OpenAIModelConfig(name="m", openai_base_url="http://127.0.0.1:9/v1", openai_model="m")
    assert config.max_upstream_response_bytes == 64 * MiB and config.read_idle_timeout_s == 120
    assert config.timeouts.total_s == config.request_timeout_s == 900


@pytest.mark.parametrize("with_content_length", [True, False], ids=["content-length", "chunked"])
def test_a_300_mb_upstream_answer_fails_the_call_naming_the_url_and_the_cap_in_bounded_memory(
    bounded_model, upstream, with_content_length
):
    implementation, url = bounded_model
    assert httpx.post(f"{url}/v1/responses", json=TURN, timeout=30).status_code == 200  # warm: pools, imports
    upstream.answer_with = huge_answer(300 * MiB, with_content_length=with_content_length)
    before = len(upstream.requests)
    with PeakRss() as rss:
        answer = httpx.post(f"{url}/v1/responses", json=TURN, timeout=60)
    assert answer.status_code == 424 and not classify_status(424).retryable  # the collector will not retry it
    error = answer.json()["error"]
    assert error["type"] == "ResponseTooLargeError"
    assert error["message"].startswith(f"model server 'policy_model': upstream POST http://127.0.0.1:{upstream.port}/")
    assert "over the 16 MiB response cap" in error["message"]
    assert f"max_upstream_response_bytes={CAP}" in error["message"]
    assert len(upstream.requests) - before == 1  # not retried: it would come back as large
    assert rss.grown < 100 * MiB, f"grew {rss.grown / MiB:.0f} MiB"
    # The server goes on serving.
    upstream.answer_with = None
    assert httpx.post(f"{url}/v1/responses", json=TURN, timeout=30).status_code == 200


def test_an_upstream_that_trickles_a_byte_a_second_is_cut_by_the_read_idle_timeout(bounded_model, upstream):
    implementation, url = bounded_model
    upstream.answer_with = trickled_answer(1.0)
    answer = httpx.post(f"{url}/v1/responses", json=TURN, timeout=30)
    assert answer.status_code == 502  # a timeout: worth another rollout attempt
    error = answer.json()["error"]
    assert error["type"] == "RequestTimeoutError"
    assert error["message"].startswith(f"model server 'policy_model': upstream POST http://127.0.0.1:{upstream.port}/")
    assert "no byte for 0.3 s" in error["message"] and "(read idle timeout)" in error["message"]
    assert len(upstream.requests) == FAST_RETRY["max_attempts"]  # retried like any timeout, then given up


def test_an_upstream_that_keeps_sending_is_still_cut_by_request_timeout_s(upstream):
    # Bytes every 0.05 s never leave the line idle; only the attempt's own deadline ends it.
    implementation = IMPLEMENTATIONS[0]
    server = implementation.build(upstream.url, FAST_RETRY | {"max_attempts": 1, "request_timeout_s": 1})
    upstream.answer_with = trickled_answer(0.05)
    with ThreadedServer.of(server) as running:
        answer = httpx.post(f"{running.url}/v1/responses", json=TURN, timeout=30)
    assert answer.status_code == 502
    assert "timed out: no complete answer within 1 s" in answer.json()["error"]["message"]


def test_keepalive_bytes_before_a_slow_answer_are_not_cut(bounded_model, upstream):
    implementation, url = bounded_model
    # Ten keepalives 0.1 s apart: a full second of answer, never 0.3 s without a byte.
    upstream.answer_with = answer_after_keepalives(10, 0.1)
    answer = httpx.post(f"{url}/v1/responses", json=TURN, timeout=30)
    assert answer.status_code == 200
    assert answer.json()["output"][0]["type"] == "message"
    assert len(upstream.requests) == 1
