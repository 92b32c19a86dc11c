"""`return_token_id_information` on local_model: training token ids from the real SmolLM2 weights.

Each model call's last output item carries `prompt_token_ids`, `generation_token_ids` and
`generation_log_probs`, in the same places vllm_model puts them.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from nemo_gym.testing.inprocess import ThreadedServer, free_port, registry_client
from responses_api_models.local_model.app import LocalModel, LocalModelConfig
from responses_api_models.local_model.engine import (
    LocalChatEngine,
    LocalModelRuntimeError,
    ModelWeightsNotFoundError,
    default_model_path,
)

TOKEN_ID_KEYS = ("prompt_token_ids", "generation_token_ids", "generation_log_probs")
SMOLLM2_END_OF_TURN = "<|im_end|>"

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def _require_weights() -> None:
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.skip("xllamacpp is not installed (pip install 'nemo-gym-lite[local]')")
    try:
        default_model_path()
    except ModelWeightsNotFoundError as error:
        pytest.skip(str(error))


class RunningModel:
    def __init__(self, model: LocalModel, url: str):
        self.model, self.url = model, url

    @property
    def engine(self) -> LocalChatEngine:
        return self.model._engine

    def respond(self, **body: Any) -> list[dict[str, Any]]:
        body = {"max_output_tokens": 12, "temperature": 0.0, **body}
        result = httpx.post(f"{self.url}/v1/responses", json=body, timeout=120)
        assert result.status_code == 200, result.text
        return result.json()["output"]

    def detokenize(self, token_ids: list[int]) -> str:
        return asyncio.run(self.engine.detokenize(token_ids))


def _serve(return_token_id_information: bool) -> Iterator[RunningModel]:
    _require_weights()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = LocalModelConfig(
        name="policy_model",
        n_ctx=1024,
        n_parallel=1,
        force_tool_call_after_user=True,  # what tool environments run with (configs/local_model.yaml)
        return_token_id_information=return_token_id_information,
    )
    model = LocalModel(config=config, server_client=registry_client({"policy_model": ("responses_api_models", url)}))
    server = ThreadedServer(model.setup_webserver(), port=port).start()
    try:
        yield RunningModel(model, url)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def with_ids() -> Iterator[RunningModel]:
    yield from _serve(return_token_id_information=True)


@pytest.fixture(scope="module")
def without_ids() -> Iterator[RunningModel]:
    yield from _serve(return_token_id_information=False)


@pytest.mark.local_model
def test_a_call_carries_the_sampled_tokens_with_their_log_probs_on_its_last_item(with_ids):
    output = with_ids.respond(input="Name three colors.")
    assert [item["type"] for item in output] == ["message"]
    item = output[-1]
    prompt_ids, generation_ids, log_probs = (item[key] for key in TOKEN_ID_KEYS)
    assert len(generation_ids) == len(log_probs) > 0
    assert all(log_prob <= 0.0 for log_prob in log_probs)
    # Sampled ids, detokenized, are the text exactly (the end-of-turn token only when it stopped).
    text = item["content"][0]["text"]
    decoded = with_ids.detokenize(generation_ids)
    assert decoded.removesuffix(SMOLLM2_END_OF_TURN) == text
    # The prompt ids are SmolLM2's chat template around the user's words, ending at the assistant's turn.
    prompt = with_ids.detokenize(prompt_ids)
    assert prompt.endswith("<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n")
    assert prompt.startswith("<|im_start|>system\n")


@pytest.mark.local_model
def test_prompt_ids_are_what_the_engine_consumed(with_ids):
    output = with_ids.respond(input=[{"role": "user", "content": "Hello"}], max_output_tokens=4)
    item = output[-1]
    # Four tokens asked for, four sampled, and the usage the engine reported agrees with the ids.
    assert len(item["generation_token_ids"]) == 4
    messages = [{"role": "user", "content": "Hello"}]
    assert item["prompt_token_ids"] == asyncio.run(with_ids.engine.tokenize_chat(messages))


@pytest.mark.local_model
def test_without_the_switch_no_token_ids_appear(without_ids):
    output = without_ids.respond(input="Name three colors.")
    assert output and not any(key in item for item in output for key in TOKEN_ID_KEYS)


def _tool_call_conversation(model: RunningModel) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    user = [{"role": "user", "content": "What is the weather in Oslo?"}]
    first = model.respond(input=user, tools=[WEATHER_TOOL], max_output_tokens=40)
    call = next(item for item in first if item["type"] == "function_call")
    history = [{key: value for key, value in item.items() if key not in TOKEN_ID_KEYS} for item in first]
    second = model.respond(
        input=user + history + [{"type": "function_call_output", "call_id": call["call_id"], "output": "cold"}],
        tools=[WEATHER_TOOL],
        max_output_tokens=8,
    )
    return first, second


@pytest.fixture(scope="module")
def tool_conversation(with_ids) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return _tool_call_conversation(with_ids)


@pytest.mark.local_model
def test_each_call_of_a_tool_conversation_carries_ids_once_on_its_last_item(with_ids, tool_conversation):
    first, second = tool_conversation
    for output in (first, second):
        assert all(key in output[-1] for key in TOKEN_ID_KEYS)
        assert not any(key in item for item in output[:-1] for key in TOKEN_ID_KEYS)
    assert first[-1]["type"] == "function_call"
    # The constrained call was generated as JSON; its sampled tokens decode to it.
    decoded = with_ids.detokenize(first[-1]["generation_token_ids"])
    assert '"get_weather"' in decoded and '"Oslo"' in decoded
    # Turn 2 re-renders the whole conversation, and turn 1's prompt survives as its prefix.
    turn1_prompt = first[-1]["prompt_token_ids"]
    assert second[-1]["prompt_token_ids"][: len(turn1_prompt)] == turn1_prompt


@pytest.mark.local_model
@pytest.mark.xfail(
    strict=True,
    reason="issue 9 part 2: turn 2 re-renders the tool call as `<tool_call>{...}</tool_call>` while the "
    "model sampled constrained JSON, so turn 1's generation ids are not in turn 2's prompt "
    "(needs required_prefix_token_ids)",
)
def test_turn_two_prompt_starts_with_turn_one_prompt_and_generation(tool_conversation):
    first, second = tool_conversation
    full_turn1 = first[-1]["prompt_token_ids"] + first[-1]["generation_token_ids"]
    assert second[-1]["prompt_token_ids"][: len(full_turn1)] == full_turn1


class NoLogprobsLlama:
    """An engine answering without the logprobs it was asked for."""

    def handle_chat_completions(self, request: dict[str, Any]) -> dict[str, Any]:
        assert request["logprobs"] is True
        return {
            "choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1},
        }


def test_token_ids_asked_for_and_missing_are_an_error_not_a_gap():
    _require_weights()
    with LocalChatEngine(n_ctx=64, n_parallel=1, n_threads=1) as engine:
        engine._server = NoLogprobsLlama()
        with pytest.raises(LocalModelRuntimeError, match="no logprobs"):
            asyncio.run(engine.chat({"messages": [{"role": "user", "content": "hi"}]}, include_token_ids=True))
