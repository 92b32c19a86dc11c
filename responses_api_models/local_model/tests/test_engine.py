"""LocalChatEngine on the real SmolLM2-135M weights (marker `local_model`, about 10 s on 2 cores)."""

from __future__ import annotations

import asyncio
import importlib.util
import json

import pytest

from responses_api_models.local_model.engine import (
    LocalChatEngine,
    ModelWeightsNotFoundError,
    default_model_path,
)

N_CTX = 512

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def engine():
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.skip("xllamacpp is not installed (pip install 'nemo-gym-lite[local]')")
    try:
        default_model_path()
    except ModelWeightsNotFoundError as error:
        pytest.skip(str(error))
    with LocalChatEngine(n_ctx=N_CTX, n_parallel=2, n_threads=2) as loaded:
        yield loaded


def ask(content: str, **params) -> dict:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 16, "temperature": 0.0, **params}


@pytest.mark.local_model
def test_a_short_answer_is_a_chat_completion_with_counted_usage(engine):
    completion = asyncio.run(engine.chat(ask("What is the capital of France?")))
    assert completion["object"] == "chat.completion"
    assert completion["id"].startswith("chatcmpl-")
    assert completion["model"] == "SmolLM2-135M-Instruct.Q4_1"
    choice = completion["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"].strip()
    assert choice["finish_reason"] in ("stop", "length")
    usage = completion["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] <= 16


@pytest.mark.local_model
def test_a_prompt_longer_than_the_context_ends_with_length_not_an_error(engine):
    completion = asyncio.run(engine.chat(ask("hello world " * N_CTX)))
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == ""
    assert completion["usage"]["prompt_tokens"] > N_CTX
    assert completion["usage"]["completion_tokens"] == 0


@pytest.mark.local_model
@pytest.mark.slow  # the longest generation of the file: it runs with the end-to-end tests
def test_more_concurrent_chats_than_slots_all_complete_without_blocking_the_loop(engine):
    async def scenario():
        chats = [asyncio.create_task(engine.chat(ask(f"Name a fruit number {i}.", max_tokens=8))) for i in range(3)]
        await asyncio.sleep(0)  # the chats start; a blocking engine would finish them right here
        loop_ran_while_generating = not all(chat.done() for chat in chats)
        return await asyncio.gather(*chats), loop_ran_while_generating

    completions, loop_ran_while_generating = asyncio.run(scenario())
    assert loop_ran_while_generating
    assert len(completions) == 3
    assert all(c["usage"]["completion_tokens"] > 0 for c in completions)


@pytest.mark.local_model
def test_a_required_tool_call_comes_back_as_an_openai_tool_call(engine):
    params = ask("What's the weather in Paris?", tools=[WEATHER_TOOL], tool_choice="required", max_tokens=48)
    completion = asyncio.run(engine.chat(params))
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    assert isinstance(json.loads(call["function"]["arguments"])["city"], str)


@pytest.mark.local_model
def test_a_tool_result_in_history_is_accepted_and_answered(engine):
    history = [
        {"role": "user", "content": "What's the weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Rainy, 12 C"},
    ]
    completion = asyncio.run(engine.chat({"messages": history, "tools": [WEATHER_TOOL], "max_tokens": 24}))
    assert completion["usage"]["completion_tokens"] > 0
    assert completion["choices"][0]["finish_reason"] in ("stop", "length", "tool_calls")


def test_a_missing_explicit_model_path_is_named_in_the_error(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelWeightsNotFoundError, match="nope.gguf"):
        LocalChatEngine(model_path=str(missing))


@pytest.mark.local_model
def test_forcing_a_tool_call_after_user_turns_makes_auto_calls_happen(engine):
    params = ask("What's the weather in Paris?", tools=[WEATHER_TOOL], max_tokens=48)
    with LocalChatEngine(engine.model_path, n_ctx=N_CTX, n_parallel=1, force_tool_call_after_user=True) as forcing:
        completion = asyncio.run(forcing.chat(params))
    assert completion["choices"][0]["finish_reason"] == "tool_calls"
    assert completion["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
