"""Tool rendering and parsing for templates without tool support: pure, no weights needed."""

from __future__ import annotations

import json
import re

from responses_api_models.local_model.tests.gbnf import parse
from responses_api_models.local_model.tool_prompt import (
    declared_tool_names,
    parse_tool_calls,
    render_tools_into_messages,
    tool_call_grammar,
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME_TOOL = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}
NAMES = ["get_weather", "get_time"]


def fixed_ids():
    counter = iter(range(1000))
    return lambda: f"call_{next(counter)}"


def arguments_of(call: dict) -> dict:
    return json.loads(call["function"]["arguments"])


# --- parsing --------------------------------------------------------------------------


def test_one_call_becomes_an_openai_tool_call_and_leaves_no_content():
    content, calls = parse_tool_calls(
        '<tool_call>{"name": "get_weather", "arguments": {"city": "SF"}}</tool_call>', NAMES, new_call_id=fixed_ids()
    )
    assert content is None
    assert calls == [
        {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "SF"}'}}
    ]


def test_default_call_ids_look_like_openai_ids_and_differ():
    _, calls = parse_tool_calls(
        '<tool_call>{"name": "get_time", "arguments": {}}</tool_call><tool_call>{"name": "get_time"}</tool_call>', NAMES
    )
    assert [re.fullmatch(r"call_[0-9a-f]+", call["id"]) is not None for call in calls] == [True, True]
    assert calls[0]["id"] != calls[1]["id"]


def test_text_around_calls_is_kept_as_content():
    text = 'Let me check.\n<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\nOne moment.'
    content, calls = parse_tool_calls(text, NAMES)
    assert content == "Let me check.\n\nOne moment."
    assert arguments_of(calls[0]) == {"city": "Paris"}


def test_missing_closing_tag_at_the_end_is_tolerated():
    content, calls = parse_tool_calls('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n', NAMES)
    assert content is None
    assert arguments_of(calls[0]) == {"city": "Oslo"}


def test_parameters_key_and_string_arguments_are_accepted():
    text = (
        '<tool_call>{"name": "get_weather", "parameters": {"city": "Rome"}}</tool_call>'
        '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Lima\\"}"}</tool_call>'
    )
    _, calls = parse_tool_calls(text, NAMES)
    assert [arguments_of(call) for call in calls] == [{"city": "Rome"}, {"city": "Lima"}]


def test_a_list_of_calls_in_one_block_and_code_fences_are_accepted():
    text = '<tool_call>```json\n[{"name": "get_weather", "arguments": {"city": "A"}}, {"name": "get_time"}]\n```</tool_call>'
    content, calls = parse_tool_calls(text, NAMES)
    assert content is None
    assert [call["function"]["name"] for call in calls] == ["get_weather", "get_time"]
    assert calls[1]["function"]["arguments"] == "{}"


def test_undeclared_tool_names_stay_in_the_content():
    text = '<tool_call>{"name": "launch_rocket", "arguments": {}}</tool_call>'
    content, calls = parse_tool_calls(text, NAMES)
    assert calls == []
    assert content == text


def test_malformed_json_stays_in_the_content_and_other_calls_still_parse():
    text = '<tool_call>{"name": "get_weather", "arguments": {city: SF}}</tool_call><tool_call>{"name": "get_time"}</tool_call>'
    content, calls = parse_tool_calls(text, NAMES)
    assert [call["function"]["name"] for call in calls] == ["get_time"]
    assert content == '<tool_call>{"name": "get_weather", "arguments": {city: SF}}</tool_call>'


def test_a_bare_json_call_without_tags_is_a_call_but_json_in_prose_is_not():
    _, calls = parse_tool_calls('{"name": "get_weather", "arguments": {"city": "Bern"}}', NAMES)
    assert arguments_of(calls[0]) == {"city": "Bern"}
    prose = 'The call would be {"name": "get_weather", "arguments": {"city": "Bern"}} I think.'
    assert parse_tool_calls(prose, NAMES) == (prose, [])


def test_plain_answers_and_empty_text_pass_through():
    assert parse_tool_calls("It is sunny.", NAMES) == ("It is sunny.", [])
    assert parse_tool_calls("", NAMES) == (None, [])
    assert parse_tool_calls(None, NAMES) == (None, [])


# --- rendering ------------------------------------------------------------------------


def test_tools_become_a_system_message_with_the_call_format():
    messages = [{"role": "user", "content": "what's the weather in SF?"}]
    rendered = render_tools_into_messages(messages, [WEATHER_TOOL])
    assert [m["role"] for m in rendered] == ["system", "user"]
    system = rendered[0]["content"]
    assert '"name": "get_weather"' in system and "Get the current weather for a city" in system
    assert '<tool_call>{"name": "get_weather", "arguments": {"city": "..."}}</tool_call>' in system
    assert messages == [{"role": "user", "content": "what's the weather in SF?"}], "input must not be modified"


def test_tools_are_prepended_to_an_existing_system_or_developer_message():
    for role in ("system", "developer"):
        rendered = render_tools_into_messages(
            [{"role": role, "content": "Be brief."}, {"role": "user", "content": "hi"}], [WEATHER_TOOL]
        )
        assert [m["role"] for m in rendered] == ["system", "user"]
        assert rendered[0]["content"].startswith("You are a function calling AI model.")
        assert rendered[0]["content"].endswith("\n\nBe brief.")


def test_tool_choice_none_renders_no_tools_and_a_forced_tool_is_the_only_one_shown():
    assert render_tools_into_messages([{"role": "user", "content": "hi"}], [WEATHER_TOOL], "none") == [
        {"role": "user", "content": "hi"}
    ]
    forced = render_tools_into_messages(
        [{"role": "user", "content": "hi"}],
        [WEATHER_TOOL, TIME_TOOL],
        {"type": "function", "function": {"name": "get_time"}},
    )[0]["content"]
    assert "get_time" in forced and "get_weather" not in forced
    assert "You must call the function get_time" in forced


def test_history_with_tool_calls_and_results_becomes_plain_turns():
    history = [
        {"role": "user", "content": "weather in SF and Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "SF"}'}},
                {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "rainy"}]},
    ]
    rendered = render_tools_into_messages(history, [])
    assert rendered == [
        {"role": "user", "content": "weather in SF and Paris?"},
        {
            "role": "assistant",
            "content": '<tool_call>{"name": "get_weather", "arguments": {"city": "SF"}}</tool_call>\n'
            '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>',
        },
        {
            "role": "user",
            "content": "<tool_response>\nsunny\n</tool_response>\n<tool_response>\nrainy\n</tool_response>",
        },
    ]


def test_rendered_calls_parse_back_to_the_same_calls():
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "SF"}'}}
    rendered = render_tools_into_messages([{"role": "assistant", "content": "Checking.", "tool_calls": [call]}], [])
    content, calls = parse_tool_calls(rendered[0]["content"], NAMES, new_call_id=lambda: "c1")
    assert content == "Checking."
    assert calls == [call]


def test_declared_names_and_call_grammar_cover_both_tool_shapes():
    assert declared_tool_names([WEATHER_TOOL, TIME_TOOL, {"type": "web_search"}]) == NAMES
    grammar = parse(tool_call_grammar([WEATHER_TOOL, TIME_TOOL], "required"))  # Chat shape, Responses shape
    weather = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "SF"}'}}
    time_call = {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
    for call in (weather, time_call):
        [message] = render_tools_into_messages([{"role": "assistant", "content": None, "tool_calls": [call]}], [])
        assert grammar.matches(message["content"])
    single = parse(tool_call_grammar([WEATHER_TOOL, TIME_TOOL], {"type": "function", "function": {"name": "get_time"}}))
    assert not single.matches('<tool_call>{"name": "get_weather", "arguments": {"city": "SF"}}</tool_call>')
    assert tool_call_grammar([], "required") is None
