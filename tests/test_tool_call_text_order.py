"""Generated text with tool calls keeps everything it says, in order (issue 18 part 4)."""

from __future__ import annotations

import json

from nemo_gym.conversion import chat_completion_to_response, generated_pieces_to_output
from nemo_gym.tool_call_text import parse_tool_calls, split_tool_calls

NAMES = ["increment_counter", "get_counter_value"]
ISSUE_TEXT = '{"name": "increment_counter", "arguments": {"count": 1}} and then I will add 2'


def ids():
    counter = iter(range(100))
    return lambda: f"call_{next(counter)}"


def call(name: str, arguments: dict, call_id: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}


def test_the_issue_case_keeps_the_text_after_a_bare_call():
    content, calls = parse_tool_calls(ISSUE_TEXT, NAMES, new_call_id=ids())
    assert calls == [call("increment_counter", {"count": 1}, "call_0")]
    assert content == "and then I will add 2"
    assert split_tool_calls(ISSUE_TEXT, NAMES, new_call_id=ids()) == [
        call("increment_counter", {"count": 1}, "call_0"),
        " and then I will add 2",
    ]


def test_every_bare_call_is_kept_with_the_text_between_them_in_order():
    text = (
        '{"name": "increment_counter", "arguments": {"count": 1}} and then I will add 2\n'
        '{"name": "increment_counter", "arguments": {"count": 2}}\n'
        "Now I read it.\n\n"
        '{"name": "get_counter_value", "arguments": {}}\nThe counter is 6.'
    )
    assert split_tool_calls(text, NAMES, new_call_id=ids()) == [
        call("increment_counter", {"count": 1}, "call_0"),
        " and then I will add 2\n",
        call("increment_counter", {"count": 2}, "call_1"),
        "\nNow I read it.\n\n",
        call("get_counter_value", {}, "call_2"),
        "\nThe counter is 6.",
    ]


def test_tagged_calls_keep_text_between_them_and_chatter_inside_a_block():
    text = (
        "First I add.\n"
        '<tool_call>{"name": "increment_counter", "arguments": {"count": 1}} then two</tool_call>\n'
        "Between.\n"
        '<tool_call>{"name": "increment_counter", "arguments": {"count": 2}}</tool_call>'
    )
    pieces = split_tool_calls(text, NAMES, new_call_id=ids())
    assert pieces == [
        "First I add.\n",
        call("increment_counter", {"count": 1}, "call_0"),
        " then two\nBetween.\n",
        call("increment_counter", {"count": 2}, "call_1"),
    ]
    content, calls = parse_tool_calls(text, NAMES, new_call_id=ids())
    assert content == "First I add.\n then two\nBetween." and len(calls) == 2


def test_joining_the_text_pieces_and_the_calls_accounts_for_the_whole_generation():
    text = ISSUE_TEXT + '\n<tool_call>{"name": "unknown_tool"}</tool_call> and {"not": "a call"}'
    pieces = split_tool_calls(text, NAMES, new_call_id=ids())
    said = "".join(piece if isinstance(piece, str) else "" for piece in pieces)
    # Only the call JSON itself left the text; an undeclared call and other JSON stay as text.
    assert calls_of(pieces) == ["increment_counter"]
    assert said == ' and then I will add 2\n<tool_call>{"name": "unknown_tool"}</tool_call> and {"not": "a call"}'


def test_output_items_follow_the_generation_order():
    pieces = split_tool_calls(
        ISSUE_TEXT + '\n{"name": "increment_counter", "arguments": {"count": 2}}\nDone.', NAMES, new_call_id=ids()
    )
    output = generated_pieces_to_output(pieces)
    assert [item["type"] for item in output] == ["function_call", "message", "function_call", "message"]
    assert [item.get("call_id") for item in output] == ["call_0", None, "call_1", None]
    assert output[1]["content"][0]["text"].strip() == "and then I will add 2"
    assert output[3]["content"][0]["text"].strip() == "Done."


def test_a_response_built_from_pieces_keeps_text_after_calls_and_token_ids_on_the_last_item():
    pieces = split_tool_calls(ISSUE_TEXT, NAMES, new_call_id=ids())
    content, calls = parse_tool_calls(ISSUE_TEXT, NAMES, new_call_id=ids())
    completion = {
        "choices": [
            {
                "message": {"role": "assistant", "content": content, "tool_calls": calls},
                "finish_reason": "tool_calls",
                "token_ids": [5, 6],
                "logprobs": {"content": [{"token": "a", "logprob": -0.5}, {"token": "b", "logprob": -0.25}]},
            }
        ],
        "prompt_token_ids": [1, 2, 3],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2},
    }
    response = chat_completion_to_response(
        completion, request_params={}, model="m", include_token_ids=True, generated_pieces=pieces
    )
    output = response["output"]
    assert [item["type"] for item in output] == ["function_call", "message"]
    assert output[1]["content"][0]["text"].strip() == "and then I will add 2"
    assert output[-1]["generation_token_ids"] == [5, 6]


def calls_of(pieces: list) -> list[str]:
    return [piece["function"]["name"] for piece in pieces if not isinstance(piece, str)]


def test_a_bare_call_then_a_tagged_call_are_both_calls():
    text = ISSUE_TEXT + '\n<tool_call>{"name": "get_counter_value", "arguments": {}}</tool_call>'
    assert calls_of(split_tool_calls(text, NAMES)) == ["increment_counter", "get_counter_value"]


def test_prose_that_mentions_a_call_later_stays_text():
    prose = 'I could send {"name": "increment_counter", "arguments": {"count": 1}} but I will not.'
    assert split_tool_calls(prose, NAMES) == [prose]
