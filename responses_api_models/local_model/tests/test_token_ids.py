"""`return_token_id_information` on local_model: training token ids from the real SmolLM2 weights.

Each model call's last output item carries `prompt_token_ids`, `generation_token_ids` and
`generation_log_probs`, in the same places vllm_model puts them; with `required_prefix_token_ids`
(sent as the agent sends it) the next call's prompt extends the previous call's ids exactly.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from nemo_gym.testing.inprocess import ThreadedServer, free_port, registry_client
from nemo_gym.token_prefix import last_call_token_ids
from responses_api_models.local_model.app import LocalModel, LocalModelConfig
from responses_api_models.local_model.engine import (
    LocalChatEngine,
    LocalModelRuntimeError,
    ModelWeightsNotFoundError,
    default_model_path,
)
from responses_api_models.local_model.tool_prompt import render_tools_into_messages

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


WEATHER_QUESTION = [{"role": "user", "content": "What is the weather in Oslo?"}]
TOOL_RESULT_TURN = "<|im_start|>user\n<tool_response>\ncold\n</tool_response><|im_end|>\n<|im_start|>assistant\n"


def _strip_ids(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: value for key, value in item.items() if key not in TOKEN_ID_KEYS} for item in items]


def _tool_result(first: list[dict[str, Any]], output: str = "cold") -> dict[str, Any]:
    call = next(item for item in first if item["type"] == "function_call")
    return {"type": "function_call_output", "call_id": call["call_id"], "output": output}


@pytest.fixture(scope="module")
def first_call(with_ids) -> list[dict[str, Any]]:
    """Turn 1 of a tool conversation: the constrained call (force_tool_call_after_user)."""
    return with_ids.respond(input=WEATHER_QUESTION, tools=[WEATHER_TOOL], max_output_tokens=40)


@pytest.fixture(scope="module")
def tool_conversation(with_ids, first_call) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Turns 1 and 2 the way the agent sends them: history with its ids, and turn 1's ids as the required prefix."""
    second = with_ids.respond(
        input=WEATHER_QUESTION + first_call + [_tool_result(first_call)],
        tools=[WEATHER_TOOL],
        max_output_tokens=8,
        required_prefix_token_ids=last_call_token_ids(first_call),
    )
    return first_call, second


@pytest.mark.local_model
def test_each_call_of_a_tool_conversation_carries_ids_once_on_its_last_item(with_ids, tool_conversation):
    first, second = tool_conversation
    for output in (first, second):
        assert all(key in output[-1] for key in TOKEN_ID_KEYS)
        assert not any(key in item for item in output[:-1] for key in TOKEN_ID_KEYS)
    assert first[-1]["type"] == "function_call"
    # The constrained call was generated as its <tool_call> text; its sampled tokens decode to it.
    decoded = with_ids.detokenize(first[-1]["generation_token_ids"])
    assert decoded.startswith('<tool_call>{"name": "get_weather", "arguments": {"city": ')


@pytest.mark.local_model
def test_turn_two_prompt_starts_with_turn_one_prompt_and_generation(with_ids, tool_conversation):
    first, second = tool_conversation
    full_turn1 = first[-1]["prompt_token_ids"] + first[-1]["generation_token_ids"]
    prompt2 = second[-1]["prompt_token_ids"]
    assert prompt2[: len(full_turn1)] == full_turn1
    # After the model's own tokens: the end of its turn (unless it sampled it: a constrained call
    # stops on another end-of-generation token), then the tool result as SmolLM2's template renders it.
    appended = with_ids.detokenize(prompt2[len(full_turn1) :])
    ended_turn = with_ids.detokenize(full_turn1[-1:]) == SMOLLM2_END_OF_TURN
    assert appended == ("\n" if ended_turn else SMOLLM2_END_OF_TURN + "\n") + TOOL_RESULT_TURN
    # Turn 2's own tokens are its text, as on any turn.
    text = second[-1]["content"][0]["text"]
    assert with_ids.detokenize(second[-1]["generation_token_ids"]).removesuffix(SMOLLM2_END_OF_TURN) == text


def _rendered_call(call: dict[str, Any]) -> str:
    """The server's own rendering of a past call (the tool prompt's `<tool_call>` text)."""
    chat_call = {
        "id": call["call_id"],
        "type": "function",
        "function": {"name": call["name"], "arguments": call["arguments"]},
    }
    [message] = render_tools_into_messages(
        [{"role": "assistant", "content": None, "tool_calls": [chat_call]}], [], "none"
    )
    return message["content"]


@pytest.mark.local_model
def test_a_forced_call_is_sampled_as_the_templates_own_call_text_and_marked_constrained(with_ids, first_call):
    # Issue 18 part 7: the grammar admits the `<tool_call>` text the conversation shows for the call, not bare
    # JSON; part 5: its tokens were drawn under a grammar, so the item says so and exports mask them.
    [call] = first_call
    assert call["type"] == "function_call" and call["generation_constrained"] is True
    decoded = with_ids.detokenize(call["generation_token_ids"])
    assert decoded == _rendered_call(call) + SMOLLM2_END_OF_TURN


@pytest.mark.local_model
def test_turn_two_prompt_is_the_same_text_whether_continued_from_ids_or_re_rendered(with_ids, first_call):
    # Continued from turn 1's ids (what training collects) and re-rendered from the messages (what the model
    # sees without token ids), turn 2's prompt is the same conversation: the call in its template form.
    continued = with_ids.respond(
        input=WEATHER_QUESTION + first_call + [_tool_result(first_call)],
        tools=[WEATHER_TOOL],
        max_output_tokens=8,
        required_prefix_token_ids=last_call_token_ids(first_call),
    )
    re_rendered = with_ids.respond(
        input=WEATHER_QUESTION + _strip_ids(first_call) + [_tool_result(first_call)],
        tools=[WEATHER_TOOL],
        max_output_tokens=8,
    )
    continued_text = with_ids.detokenize(continued[-1]["prompt_token_ids"])
    assert continued_text == with_ids.detokenize(re_rendered[-1]["prompt_token_ids"])
    assert "<|im_start|>assistant\n" + _rendered_call(first_call[0]) + "<|im_end|>\n" in continued_text
    assert "generation_constrained" not in continued[-1]  # a free turn: trained as usual


@pytest.mark.local_model
def test_the_prefix_is_honoured_when_token_ids_are_not_returned(with_ids, without_ids, tool_conversation):
    first, second = tool_conversation
    body = {
        "input": WEATHER_QUESTION + first + [_tool_result(first)],
        "tools": [WEATHER_TOOL],
        "max_output_tokens": 8,
        "temperature": 0.0,
        "required_prefix_token_ids": last_call_token_ids(first),
    }
    reply = httpx.post(f"{without_ids.url}/v1/responses", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    assert not any(key in item for item in reply.json()["output"] for key in TOKEN_ID_KEYS)
    # It read the same token-id prompt as the server that returns ids (a re-render is longer).
    assert reply.json()["usage"]["input_tokens"] == len(second[-1]["prompt_token_ids"])


def _refusal(model: RunningModel, **body: Any) -> str:
    reply = httpx.post(f"{model.url}/v1/responses", json={"max_output_tokens": 4, **body}, timeout=120)
    assert reply.status_code == 400, reply.text
    return reply.json()["error"]["message"]


@pytest.mark.local_model
def test_a_prefix_that_is_not_the_last_turns_ids_is_refused(with_ids, first_call):
    prefix = last_call_token_ids(first_call)
    prefix[3] = (prefix[3] + 1) % 1000
    message = _refusal(
        with_ids,
        input=WEATHER_QUESTION + first_call + [_tool_result(first_call)],
        tools=[WEATHER_TOOL],
        required_prefix_token_ids=prefix,
    )
    assert message.startswith("required_prefix_token_ids does not end at the last model turn")
    assert "at position 3" in message


@pytest.mark.local_model
def test_a_prefix_with_ids_outside_the_vocabulary_is_refused(with_ids, first_call):
    message = _refusal(
        with_ids,
        input=WEATHER_QUESTION + _strip_ids(first_call) + [_tool_result(first_call)],
        tools=[WEATHER_TOOL],
        required_prefix_token_ids=[1, 2, 49152],
    )
    assert (
        message == "required_prefix_token_ids[2] = 49152 is not a token id of this model (its vocabulary is 0..49151)"
    )


@pytest.mark.local_model
def test_a_prefix_without_a_model_turn_in_the_input_is_refused(with_ids):
    message = _refusal(with_ids, input=WEATHER_QUESTION, required_prefix_token_ids=[1, 2, 3])
    assert "the input holds no model turn" in message


@pytest.mark.local_model
def test_a_prefix_plus_new_tokens_past_the_context_ends_the_turn_incomplete(with_ids, first_call):
    # n_ctx is 1024 here: a tool result of ~1500 tokens cannot fit after the prefix.
    result = httpx.post(
        f"{with_ids.url}/v1/responses",
        json={
            "input": WEATHER_QUESTION + first_call + [_tool_result(first_call, "cold " * 1500)],
            "tools": [WEATHER_TOOL],
            "max_output_tokens": 8,
            "required_prefix_token_ids": last_call_token_ids(first_call),
        },
        timeout=120,
    )
    assert result.status_code == 200, result.text
    response = result.json()
    assert response["status"] == "incomplete"
    item = response["output"][-1]
    assert item["type"] == "message" and item["content"][0]["text"] == ""
    assert item["generation_token_ids"] == [] and item["generation_log_probs"] == []
    full_turn1 = last_call_token_ids(first_call)
    assert item["prompt_token_ids"][: len(full_turn1)] == full_turn1
    assert len(item["prompt_token_ids"]) > 1024


class NoLogprobsLlama:
    """An engine answering without the logprobs it was asked for."""

    def handle_chat_completions(self, request: dict[str, Any]) -> dict[str, Any]:
        assert request["logprobs"] is True
        return {
            "choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1},
        }


@contextmanager
def answered_by(model: RunningModel, fake: Any) -> Iterator[LocalChatEngine]:
    """The model's engine with `fake` standing in for llama.cpp for a moment.

    The loaded server is kept and put back, not dropped: destroying an xllamacpp server right
    after it loaded can hang in its destructor (its loop thread may not have started yet)."""
    engine = model.engine
    loaded, engine._server = engine._server, fake
    try:
        yield engine
    finally:
        engine._server = loaded


def test_token_ids_asked_for_and_missing_are_an_error_not_a_gap(with_ids):
    with answered_by(with_ids, NoLogprobsLlama()) as engine:
        with pytest.raises(LocalModelRuntimeError, match="no logprobs"):
            asyncio.run(engine.chat({"messages": [{"role": "user", "content": "hi"}]}, include_token_ids=True))


class ChatOnlyLlama:
    """An engine with the chat method alone: no completion from ids, no tokenizer listener to call."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def handle_chat_completions(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        return {
            "choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1},
        }


def test_without_token_ids_or_a_prefix_a_call_is_one_chat_request_and_nothing_else(without_ids):
    # The hot path of every run that does not train: no logprobs asked for, no tokenizing, no
    # template rendering (ChatOnlyLlama has no listener, so either would fail), no completion call.
    llama = ChatOnlyLlama()
    with answered_by(without_ids, llama) as engine:
        completion = asyncio.run(engine.chat({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}))
    assert completion["choices"][0]["message"]["content"] == "hi"
    assert "prompt_token_ids" not in completion
    [request] = llama.requests
    assert set(request) == {"messages", "max_tokens", "temperature", "stream"}
