"""Responses <-> Chat Completions conversion: exact dicts for every rule a model server relies on."""

from __future__ import annotations

import re

import pytest

from nemo_gym.conversion import (
    chat_completion_to_response,
    context_length_exceeded,
    empty_incomplete_completion,
    new_id,
    responses_to_chat_params,
    think_split,
)
from nemo_gym.errors import InputError, InvalidResponseError

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": True,
}
WEATHER_CHAT_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": True,
    },
}

_GENERATED_ID = re.compile(r"^(resp|msg|rs|call)_[0-9a-f]{32}$")


def stable_ids(value):
    """Replace generated ids (`msg_<hex>`) by `msg_*` so whole dicts can be compared exactly."""
    if isinstance(value, dict):
        return {k: stable_ids(v) for k, v in value.items()}
    if isinstance(value, list):
        return [stable_ids(v) for v in value]
    if isinstance(value, str) and _GENERATED_ID.match(value):
        return value.split("_")[0] + "_*"
    return value


def completion(message: dict, finish_reason: str = "stop", **extra) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "upstream",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}],
        **extra,
    }


def to_response(message: dict, request_params: dict | None = None, **kwargs) -> dict:
    response = chat_completion_to_response(
        completion(message, **kwargs), request_params=request_params or {"input": "hi"}, model="policy"
    )
    assert isinstance(response.pop("created_at"), int)
    return stable_ids(response)


# --- small helpers ---------------------------------------------------------------------------


def test_new_id_has_prefix_and_is_unique():
    first, second = new_id("msg"), new_id("msg")
    assert re.fullmatch(r"msg_[0-9a-f]{32}", first)
    assert first != second


def test_think_split_keeps_whitespace_and_order():
    assert think_split("<think>\n a \n</think>\n\nmiddle<think>b</think> end ") == (["\n a \n", "b"], "\n\nmiddle end ")
    assert think_split("no thinking") == ([], "no thinking")
    assert think_split("<think>unclosed") == ([], "<think>unclosed")


# --- Responses -> Chat -----------------------------------------------------------------------


def test_string_input_becomes_one_user_message():
    assert responses_to_chat_params({"input": "  What is 2+2?\n"}) == {
        "messages": [{"role": "user", "content": "  What is 2+2?\n"}]
    }


def test_multi_turn_with_parallel_tool_calls_merges_one_assistant_message():
    params = {
        "input": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Weather in Paris "},
                    {"type": "input_text", "text": "and Rome?"},
                ],
            },
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Two cities."}]},
            {
                "type": "message",
                "id": "msg_1",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Checking both.", "annotations": []}],
            },
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_a",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
                "status": "completed",
            },
            {
                "type": "function_call",
                "id": "fc_2",
                "call_id": "call_b",
                "name": "get_weather",
                "arguments": '{"city": "Rome"}',
                "status": "completed",
            },
            {"type": "function_call_output", "call_id": "call_a", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_b", "output": "rainy"},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Paris sunny, Rome rainy."}],
            },
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "max_output_tokens": 256,
        "temperature": 0.5,
        "top_p": 0.9,
    }
    assert responses_to_chat_params(params) == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Weather in Paris "}, {"type": "text", "text": "and Rome?"}],
            },
            {
                "role": "assistant",
                "content": "<think>Two cities.</think>Checking both.",
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_b", "content": "rainy"},
            {"role": "assistant", "content": "Paris sunny, Rome rainy."},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [WEATHER_CHAT_TOOL],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "max_tokens": 256,
        "temperature": 0.5,
        "top_p": 0.9,
    }


def test_tool_calls_without_text_have_null_content():
    params = {
        "input": [
            {"role": "user", "content": "go"},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        ]
    }
    assert responses_to_chat_params(params)["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }


def test_reasoning_in_history_is_prepended_as_think_blocks_in_order():
    params = {
        "input": [
            {"role": "user", "content": "q"},
            {
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": "first"}, {"type": "summary_text", "text": ""}],
            },
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "second\n"}]},
            {"role": "assistant", "content": " answer"},
        ]
    }
    assert responses_to_chat_params(params)["messages"][1] == {
        "role": "assistant",
        "content": "<think>first</think><think>second\n</think> answer",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }


def test_developer_role_kept_or_replaced():
    params = {"input": [{"role": "developer", "content": "rules"}, {"role": "user", "content": "hi"}]}
    assert responses_to_chat_params(params)["messages"][0] == {"role": "developer", "content": "rules"}
    replaced = responses_to_chat_params(params, replace_developer_role_with_system=True)
    assert replaced["messages"][0] == {"role": "system", "content": "rules"}


def test_instructions_become_a_leading_system_message():
    params = {"input": "hi", "instructions": "You are terse."}
    assert responses_to_chat_params(params) == {
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hi"}]
    }


def test_request_keys_are_mapped_passed_or_dropped_explicitly():
    params = {
        "input": "hi",
        "model": "m",
        "seed": 7,
        "stop": ["\n\n"],
        "user": "u1",
        "top_k": 20,  # not a Responses field, but the boundary let it through: backend extra
        "tools": [],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "metadata": {"task": "1"},
        "include": ["reasoning.encrypted_content"],
        "reasoning": {"effort": "low", "summary": "auto"},
        "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}},
        "truncation": "disabled",
        "store": False,
        "background": False,
        "previous_response_id": None,
        "prompt": None,
        "service_tier": "auto",
        "max_tool_calls": 3,
        "top_logprobs": 5,
        "stream": False,
    }
    assert responses_to_chat_params(params) == {
        "messages": [{"role": "user", "content": "hi"}],
        "model": "m",
        "seed": 7,
        "stop": ["\n\n"],
        "user": "u1",
        "top_k": 20,
        "reasoning_effort": "low",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
        },
    }


def test_tool_choice_forms():
    base = {"input": "hi", "tools": [WEATHER_TOOL]}
    for choice in ("auto", "none", "required"):
        assert responses_to_chat_params({**base, "tool_choice": choice})["tool_choice"] == choice
    named = responses_to_chat_params({**base, "tool_choice": {"type": "function", "name": "get_weather"}})
    assert named["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    with pytest.raises(InputError, match="tool_choice"):
        responses_to_chat_params({**base, "tool_choice": {"type": "web_search_preview"}})


def test_unconvertible_input_is_a_named_error():
    with pytest.raises(InputError, match=r"input\[0\].*input_image"):
        responses_to_chat_params({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]})
    with pytest.raises(InputError, match=r"input\[1\].*item_reference"):
        responses_to_chat_params({"input": [{"role": "user", "content": "a"}, {"type": "item_reference", "id": "x"}]})
    with pytest.raises(InputError, match="web_search"):
        responses_to_chat_params({"input": "a", "tools": [{"type": "web_search"}]})


def test_token_ids_ride_on_their_own_assistant_message_and_reset_per_turn():
    turn_1 = {"prompt_token_ids": [1, 2], "generation_token_ids": [3, 4], "generation_log_probs": [-0.1, -0.2]}
    turn_2 = {"prompt_token_ids": [1, 2, 3, 4, 5], "generation_token_ids": [6], "generation_log_probs": [-0.3]}
    params = {
        "input": [
            {"role": "user", "content": "q"},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "r"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}", **turn_1},
            {"type": "function_call_output", "call_id": "c1", "output": "out"},
            {"role": "assistant", "content": "done", **turn_2},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "written by a human, never generated"},
        ]
    }
    messages = responses_to_chat_params(params, include_token_ids=True)["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": "<think>r</think>",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        **turn_1,
    }
    assert messages[3] == {"role": "assistant", "content": "done", **turn_2}
    assert messages[5] == {"role": "assistant", "content": "written by a human, never generated"}
    # Without the flag the ids stay out of the chat request.
    assert responses_to_chat_params(params)["messages"][3] == {"role": "assistant", "content": "done"}


def test_partial_token_id_bundle_in_history_is_an_error():
    params = {"input": [{"role": "assistant", "content": "x", "prompt_token_ids": [1], "generation_token_ids": [2]}]}
    with pytest.raises(InputError, match="generation_log_probs"):
        responses_to_chat_params(params, include_token_ids=True)


# --- Chat -> Responses -----------------------------------------------------------------------


def test_plain_answer_becomes_a_completed_response_echoing_the_request():
    request = {
        "input": "hi",
        "tools": [WEATHER_TOOL],
        "temperature": 0.2,
        "top_p": 0.8,
        "max_output_tokens": 64,
        "instructions": "Be kind.",
        "metadata": {"k": "v"},
    }
    response = to_response(
        {"content": "Hello!"},
        request,
        usage={
            "prompt_tokens": 10,
            "completion_tokens": 3,
            "total_tokens": 13,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 1},
        },
    )
    assert response == {
        "id": "resp_*",
        "object": "response",
        "model": "policy",
        "output": [
            {
                "id": "msg_*",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Hello!", "annotations": []}],
            }
        ],
        "usage": {
            "input_tokens": 10,
            "output_tokens": 3,
            "total_tokens": 13,
            "input_tokens_details": {"cached_tokens": 4},
            "output_tokens_details": {"reasoning_tokens": 1},
        },
        "status": "completed",
        "incomplete_details": None,
        "error": None,
        "tools": [WEATHER_TOOL],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "temperature": 0.2,
        "top_p": 0.8,
        "max_output_tokens": 64,
        "instructions": "Be kind.",
        "metadata": {"k": "v"},
    }


def test_missing_usage_counts_as_zero():
    assert to_response({"content": "x"})["usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    }


def test_finish_reason_length_is_incomplete_max_output_tokens():
    response = to_response({"content": "cut o"}, finish_reason="length")
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}


def test_reasoning_field_and_think_tags_become_one_reasoning_item_first():
    response = to_response(
        {
            "reasoning_content": "parsed by vLLM",
            "content": "<think>\nin the text\n</think>\n\nThe answer.",
            "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}],
        }
    )
    assert response["output"] == [
        {
            "id": "rs_*",
            "type": "reasoning",
            "summary": [
                {"type": "summary_text", "text": "parsed by vLLM"},
                {"type": "summary_text", "text": "\nin the text\n"},
            ],
        },
        {
            "id": "msg_*",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "\n\nThe answer.", "annotations": []}],
        },
        {
            "type": "function_call",
            "id": "call_9",
            "call_id": "call_9",
            "name": "f",
            "arguments": '{"a": 1}',
            "status": "completed",
        },
    ]


def test_newer_vllm_reasoning_field_name():
    assert to_response({"reasoning": "r", "content": "a"})["output"][0]["summary"] == [
        {"type": "summary_text", "text": "r"}
    ]


def test_parallel_tool_calls_split_into_function_call_items_without_a_message():
    response = to_response(
        {
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Rome"'},
                },
            ],
        },
        finish_reason="tool_calls",
    )
    assert response["output"] == [
        {
            "type": "function_call",
            "id": "call_a",
            "call_id": "call_a",
            "name": "get_weather",
            "arguments": '{"city": "Paris"}',
            "status": "completed",
        },
        # Malformed arguments are kept verbatim for the agent to report back to the model.
        {
            "type": "function_call",
            "id": "call_b",
            "call_id": "call_b",
            "name": "get_weather",
            "arguments": '{"city": "Rome"',
            "status": "completed",
        },
    ]
    assert response["status"] == "completed"


def test_nothing_at_all_still_yields_one_empty_message():
    assert to_response({"content": None})["output"] == [
        {
            "id": "msg_*",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": "", "annotations": []}],
        }
    ]


def test_token_ids_attach_to_the_last_output_item():
    upstream = completion(
        {
            "content": "<think>t</think>ok",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        prompt_token_ids=[1, 2, 3],
    )
    upstream["choices"][0]["logprobs"] = {
        "content": [
            {"token": "token_id:7", "logprob": -0.5},
            {"token": "token_id:8", "logprob": -0.25},
        ]
    }
    response = chat_completion_to_response(upstream, request_params={"input": "q"}, model="m", include_token_ids=True)
    *first, last = response["output"]
    assert [item["type"] for item in first] == ["reasoning", "message"]
    assert not any("prompt_token_ids" in item for item in first)
    assert last == {
        "type": "function_call",
        "id": "c1",
        "call_id": "c1",
        "name": "f",
        "arguments": "{}",
        "status": "completed",
        "prompt_token_ids": [1, 2, 3],
        "generation_token_ids": [7, 8],
        "generation_log_probs": [-0.5, -0.25],
    }


def test_inline_token_ids_on_the_choice_win_over_logprob_token_strings():
    upstream = completion({"content": "ok"})
    upstream["choices"][0].update(
        prompt_token_ids=[1],
        token_ids=[5, 6],
        logprobs={"content": [{"token": "o", "logprob": -1.0}, {"token": "k", "logprob": -2.0}]},
    )
    item = chat_completion_to_response(upstream, request_params={"input": "q"}, model="m", include_token_ids=True)[
        "output"
    ][-1]
    assert (item["prompt_token_ids"], item["generation_token_ids"], item["generation_log_probs"]) == (
        [1],
        [5, 6],
        [-1.0, -2.0],
    )


def test_token_ids_requested_but_missing_is_an_error_not_a_silent_gap():
    upstream = completion({"content": "ok"}, prompt_token_ids=[1])  # e.g. top_logprobs suppressed logprobs
    upstream["choices"][0]["token_ids"] = [5]
    with pytest.raises(InvalidResponseError, match="generation_log_probs"):
        chat_completion_to_response(upstream, request_params={"input": "q"}, model="m", include_token_ids=True)


def test_completion_without_choices_is_invalid():
    with pytest.raises(InvalidResponseError):
        chat_completion_to_response({"choices": []}, request_params={"input": "q"}, model="m")


# --- context overflow ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        '{"error": {"message": "This model\'s maximum context length is 4096 tokens. However, you requested 5000 tokens"}}',
        '{"error": {"code": "context_length_exceeded"}}',
        "'max_tokens' or 'max_completion_tokens' is too large: 5000.",
        "The decoder prompt (length 5000) is longer than the maximum model length of 4096.",
        '{"error": {"type": "exceed_context_size_error", "message": "the request exceeds the available context size"}}',
    ],
)
def test_context_overflow_is_recognised(body):
    assert context_length_exceeded(400, body)


def test_other_errors_are_not_context_overflow():
    assert not context_length_exceeded(400, "max_tokens must be at least 1")
    assert not context_length_exceeded(400, "Invalid tool_choice")
    assert not context_length_exceeded(500, "maximum context length exceeded")


def test_empty_incomplete_completion_ends_the_episode_cleanly():
    for include_token_ids in (False, True):
        response = chat_completion_to_response(
            empty_incomplete_completion(), request_params={"input": "q"}, model="m", include_token_ids=include_token_ids
        )
        assert response["status"] == "incomplete"
        assert response["incomplete_details"] == {"reason": "context_limit"}
        assert [item["content"] for item in response["output"]] == [
            [{"type": "output_text", "text": "", "annotations": []}]
        ]


def test_length_with_tokens_is_the_output_limit_and_without_is_the_context_limit():
    def finished(completion_tokens: int | None) -> dict:
        usage = None if completion_tokens is None else {"prompt_tokens": 9, "completion_tokens": completion_tokens}
        chat = {"choices": [{"message": {"role": "assistant", "content": "x"}, "finish_reason": "length"}]}
        return chat_completion_to_response(chat | {"usage": usage}, request_params={"input": "q"}, model="m")

    assert finished(5)["incomplete_details"] == {"reason": "max_output_tokens"}
    assert finished(0)["incomplete_details"] == {"reason": "context_limit"}
    # Without usage nothing says the context was full: the long-standing reading stays.
    assert finished(None)["incomplete_details"] == {"reason": "max_output_tokens"}


# --- round trip ------------------------------------------------------------------------------


def scripted_upstream(chat_params: dict) -> dict:
    """A stand-in chat backend: answers with whitespace-heavy text, reasoning and a tool call."""
    assert chat_params["messages"][-1]["role"] in ("user", "tool")
    return completion(
        {
            "content": "<think>\n  step 1\n\n  step 2 </think>\n\n  Final answer:\n\tkeep   spacing  \n\n",
            "tool_calls": [
                {
                    "id": "call_z",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ' {"city": "Oslo"} '},
                }
            ],
        },
        finish_reason="tool_calls",
    )


def test_round_trip_preserves_text_exactly():
    user_text = "\n  Leading and trailing whitespace \n\n"
    params = {
        "input": [{"role": "user", "content": [{"type": "input_text", "text": user_text}]}],
        "tools": [WEATHER_TOOL],
    }

    chat_params = responses_to_chat_params(params)
    assert chat_params["messages"] == [{"role": "user", "content": [{"type": "text", "text": user_text}]}]
    upstream = scripted_upstream(chat_params)
    response = chat_completion_to_response(upstream, request_params=params, model="policy")

    # The agent appends the output and the tool result, then asks again.
    next_params = {
        **params,
        "input": params["input"]
        + response["output"]
        + [{"type": "function_call_output", "call_id": "call_z", "output": " 3°C\n"}],
    }
    messages = responses_to_chat_params(next_params)["messages"]
    assert messages[0] == chat_params["messages"][0]
    assert messages[1] == upstream["choices"][0]["message"]
    assert messages[2] == {"role": "tool", "tool_call_id": "call_z", "content": " 3°C\n"}


def test_chat_shaped_history_items_are_accepted():
    # Datasets written in chat form (assistant `tool_calls`, role `tool`) convert instead of crashing.
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    params = {
        "input": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "out"},
        ]
    }
    assert responses_to_chat_params(params)["messages"] == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "out"},
    ]
