"""A NeMo Gym judge environment's own tests run here unchanged: they hand `verify` a mocked
`ServerClient` whose `post` returns a mocked aiohttp response (`ok`, `await read()`), which
`call_judge` reads as NeMo Gym's helpers do. Its YAML may carry keys its config class does not
declare; NeMo Gym ignores them, we name them in a warning and start."""

import importlib.util
import json
from pathlib import Path
from unittest.mock import AsyncMock, MagicMock

import orjson
import pytest
import yaml
from fastapi import FastAPI

from nemo_gym.errors import ConfigError, JudgeError
from nemo_gym.global_config import get_first_server_config_dict, remember_server_bootstrap
from nemo_gym.openai_utils import (
    NeMoGymEasyInputMessage,
    NeMoGymResponse,
    NeMoGymResponseCreateParamsNonStreaming,
    NeMoGymResponseOutputMessage,
    NeMoGymResponseOutputText,
)
from nemo_gym.server_utils import ServerClient, get_response_json, raise_for_status
from nemo_gym.servers.base import ServerBootstrap
from nemo_gym.servers.resources import BaseResourcesServerConfig, SimpleResourcesServer
from nemo_gym.testing import ThreadedServer, registry_client

ENV = Path(__file__).parent / "envs" / "judged_answer"


def load_app():
    spec = importlib.util.spec_from_file_location("judged_answer_app", ENV / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


judged_answer = load_app()


def yaml_block() -> dict:
    return yaml.safe_load((ENV / "configs/judged_answer.yaml").read_text())["judged_answer"]["resources_servers"][
        "judged_answer"
    ]


def message_response(text: str, response_id: str = "resp") -> NeMoGymResponse:
    return NeMoGymResponse(
        id=response_id,
        created_at=0.0,
        model="judge_model",
        object="response",
        output=[
            NeMoGymResponseOutputMessage(
                id="msg",
                content=[NeMoGymResponseOutputText(annotations=[], text=text, type="output_text")],
                role="assistant",
                status="completed",
                type="message",
            )
        ],
        parallel_tool_calls=False,
        tool_choice="none",
        tools=[],
    )


def chat_completion(text: str) -> dict:
    return {
        "id": "chat",
        "object": "chat.completion",
        "created": 0,
        "model": "judge",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
    }


def server_with_judge_answer(body: bytes | str, use_chat_completions: bool = False):
    """The server, its mocked client, and the mocked response the judge call gets: as NeMo Gym's tests build them."""
    config = judged_answer.JudgedAnswerConfig(
        host="0.0.0.0",
        port=8080,
        name="",
        judge_model_server={"type": "responses_api_models", "name": "judge_model"},
        judge_responses_create_params={"input": []},
        use_chat_completions=use_chat_completions,
    )
    server_mock = MagicMock(spec=ServerClient)
    response_mock = MagicMock()
    response_mock.read = AsyncMock(return_value=body)
    server_mock.post = AsyncMock(return_value=response_mock)
    return judged_answer.JudgedAnswerServer(config=config, server_client=server_mock), server_mock, response_mock


def request(answer: str) -> object:
    return judged_answer.JudgedAnswerVerifyRequest(
        responses_create_params=NeMoGymResponseCreateParamsNonStreaming(
            input=[NeMoGymEasyInputMessage(role="user", content="What is 6 times 7?")]
        ),
        response=message_response(answer, "policy"),
        expected_answer="42",
    )


async def test_judge_answer_read_from_a_mocked_response_body_in_bytes() -> None:
    server, server_mock, _ = server_with_judge_answer(orjson.dumps(message_response("[[A=B]]").model_dump()))
    result = await server.verify(request("It is 42."))
    assert result.reward == 1.0 and result.judge_text == "[[A=B]]"
    sent = server_mock.post.call_args.kwargs
    assert sent["server_name"] == "judge_model" and sent["url_path"] == "/v1/responses"
    assert "Candidate answer: It is 42." in sent["json"].input[0].content


async def test_chat_completions_judge_answer_read_from_a_body_in_str() -> None:
    server, server_mock, _ = server_with_judge_answer(json.dumps(chat_completion("[[A!=B]]")), True)
    result = await server.verify(request("It is 41."))
    assert result.reward == 0.0 and result.judge_text == "[[A!=B]]"
    assert server_mock.post.call_args.kwargs["url_path"] == "/v1/chat/completions"


async def test_a_mocked_error_status_or_a_wrong_body_is_a_judge_error() -> None:
    server, _, response_mock = server_with_judge_answer(b"{}")
    with pytest.raises(JudgeError, match="ValidationError"):
        await server.verify(request("It is 42."))

    response_mock.ok = False
    response_mock.content.read = AsyncMock(return_value=b"rate limited")
    response_mock.raise_for_status = MagicMock(side_effect=RuntimeError("429, message='Too Many Requests'"))
    with pytest.raises(JudgeError, match="Too Many Requests"):
        await server.verify(request("It is 42."))
    response_mock.content.read.assert_awaited_once()


async def test_helpers_read_any_aiohttp_like_response() -> None:
    response = MagicMock()
    response.read = AsyncMock(return_value=b'{"a": 1}')
    await raise_for_status(response)  # `ok` is truthy: nothing to raise
    assert await get_response_json(response) == {"a": 1}


def bootstrap(block: dict) -> ServerBootstrap:
    return ServerBootstrap(
        name="judged_answer",
        config=block,
        head_url="http://127.0.0.1:9",
        config_key="judged_answer.resources_servers.judged_answer",
    )


def test_a_key_the_config_class_does_not_declare_is_named_and_ignored(capsys: pytest.CaptureFixture[str]) -> None:
    config = judged_answer.JudgedAnswerServer.checked_config(bootstrap(yaml_block()))
    assert config.judge_model_server.name == "judge_model"
    warning = capsys.readouterr().err
    assert "judged_answer.resources_servers.judged_answer.strip_thinking_from_response" in warning
    assert "warning" in warning and "ignored" in warning

    # A wrong value of a declared key still stops it.
    with pytest.raises(ConfigError, match="use_chat_completions"):
        judged_answer.JudgedAnswerServer.checked_config(bootstrap(yaml_block() | {"use_chat_completions": "often"}))


def test_our_own_servers_still_refuse_an_undeclared_key() -> None:
    class OwnConfig(BaseResourcesServerConfig):
        threshold: float = 0.5

    class OwnServer(SimpleResourcesServer):
        config: OwnConfig

    with pytest.raises(ConfigError, match="unknown parameter 'judged_answer.resources_servers.judged_answer.treshold'"):
        OwnServer.checked_config(bootstrap({"entrypoint": "app.py", "treshold": 0.7}))


def test_setup_webserver_can_wait_for_its_judge_as_in_nemo_gym() -> None:
    """xstest's `setup_webserver` polls `server_client.poll_for_status(judge)` until "success", then
    builds the judge's URL from `global_config_dict` with `_build_server_base_url`."""
    judge_app = FastAPI()  # no routes: any answer, even 404, means the judge is up
    with ThreadedServer(judge_app) as judge:
        registry = {
            "judge_model": ("responses_api_models", judge.url),
            "gone": ("responses_api_models", "http://127.0.0.1:9"),
        }
        client = ServerClient.from_client(registry_client(registry))
        assert client.poll_for_status("judge_model") == "success"
        assert client.poll_for_status("gone") == "connection_error"
        assert client.poll_for_status("never_configured") == "unknown_error"

        remember_server_bootstrap("judged_answer", {}, "http://127.0.0.1:9", list(client._registry.values()))
        block = get_first_server_config_dict(client.global_config_dict, "judge_model")
        assert client._build_server_base_url(block) == judge.url.rstrip("/")
