"""Building a token-exact prompt on `required_prefix_token_ids`: the checks and the splice, without weights."""

from __future__ import annotations

import pytest

from responses_api_models.local_model.token_continuation import (
    RequiredPrefixError,
    check_prefix_ends_turn,
    continued_prompt,
    last_model_turn,
    text_after_marker,
    validated_prefix,
    with_marker,
)

IM_END = 2

CONVERSATION = [
    {"role": "system", "content": "tools..."},
    {"role": "user", "content": "weather in Oslo?"},
    {"role": "assistant", "content": '<tool_call>{"name": "get_weather"}</tool_call>'},
    {"role": "user", "content": "<tool_response>\ncold\n</tool_response>"},
]


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ([], "required_prefix_token_ids must be a non-empty list of token ids"),
        ("1 2 3", "required_prefix_token_ids must be a non-empty list of token ids"),
        ([1, -1], "required_prefix_token_ids[1] = -1 is not a token id of this model (its vocabulary is 0..99)"),
        ([1, 100], "required_prefix_token_ids[1] = 100 is not a token id of this model (its vocabulary is 0..99)"),
        ([True], "required_prefix_token_ids[0] = True is not a token id of this model (its vocabulary is 0..99)"),
        ([1.0], "required_prefix_token_ids[0] = 1.0 is not a token id of this model (its vocabulary is 0..99)"),
    ],
)
def test_a_prefix_of_anything_but_this_models_token_ids_is_refused_with_its_position(prefix, message):
    with pytest.raises(RequiredPrefixError) as caught:
        validated_prefix(prefix, vocabulary_size=100)
    assert str(caught.value) == message
    assert caught.value.status_code == 400


def test_the_prefix_continues_the_last_assistant_turn_and_needs_something_after_it():
    assert last_model_turn(CONVERSATION) == 2
    with pytest.raises(RequiredPrefixError, match="holds no model turn"):
        last_model_turn(CONVERSATION[:2])
    with pytest.raises(RequiredPrefixError, match="nothing follows the last model turn"):
        last_model_turn(CONVERSATION[:3])


def test_a_prefix_must_be_the_full_ids_of_the_turn_it_continues_when_the_turn_carries_them():
    turn = {"role": "assistant", "content": "hi", "prompt_token_ids": [5, 6], "generation_token_ids": [7, IM_END]}
    check_prefix_ends_turn([5, 6, 7, IM_END], turn)
    check_prefix_ends_turn([9, 9], {"role": "assistant", "content": "hi"})  # ids dropped: nothing to compare
    with pytest.raises(RequiredPrefixError, match=r"at position 2 \(sent 3 ids, the turn has 4\)"):
        check_prefix_ends_turn([5, 6, 8], turn)
    with pytest.raises(RequiredPrefixError, match=r"at position 4 \(sent 5 ids, the turn has 4\)"):
        check_prefix_ends_turn([5, 6, 7, IM_END, 1], turn)


def test_the_new_text_is_what_the_template_puts_after_the_marked_turn():
    marked, marker = with_marker(CONVERSATION, 2)
    assert marked[2]["content"] == marker and CONVERSATION[2]["content"].startswith("<tool_call>")
    rendered = (
        "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in marked) + "<|im_start|>assistant\n"
    )
    assert text_after_marker(rendered, marker) == (
        "<|im_end|>\n<|im_start|>user\n<tool_response>\ncold\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    with pytest.raises(RequiredPrefixError, match="does not render the last model turn's content"):
        text_after_marker(rendered.replace(marker, marker.lower()), marker)


def test_an_end_of_turn_the_model_sampled_is_not_added_twice():
    new = [IM_END, 198, 1, 4093]
    assert continued_prompt([5, 6, 7, IM_END], new) == [5, 6, 7, IM_END, 198, 1, 4093]
    # Cut off, or stopped on another end-of-generation token: the template's closing is added.
    assert continued_prompt([5, 6, 7, 0], new) == [5, 6, 7, 0, IM_END, 198, 1, 4093]
