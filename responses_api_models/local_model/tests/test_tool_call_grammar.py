"""The grammar of a forced tool call admits exactly the text the server renders for that call afterwards
(issue 18 part 7): `<tool_call>` + the call as `json.dumps` writes it + `</tool_call>`. Then the tokens
sampled under it and the re-rendered conversation are the same text, so a token-exact prompt shows the
model its call in the form its prompt teaches, not as bare JSON."""

from __future__ import annotations

import json
import random

import pytest

from nemo_gym.tool_call_text import split_tool_calls
from responses_api_models.local_model.engine import _ban_tokens, _is_constrained
from responses_api_models.local_model.tests.gbnf import parse
from responses_api_models.local_model.tool_prompt import render_tools_into_messages, tool_call_grammar

CONVERT_TOOL = {
    "type": "function",
    "name": "convert",
    "parameters": {
        "type": "object",
        "properties": {
            "value": {"type": "number"},
            "from_unit": {"type": "string"},
            "to_unit": {"enum": ["m", "ft", "°C"]},
            "precision": {"type": "integer"},
            "exact": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "options": {"type": "object", "properties": {"round": {"type": "boolean"}}},
            "extra": {},
        },
        "required": ["value", "from_unit", "to_unit"],
    },
}
COUNTER_TOOL = {
    "type": "function",
    "name": "increment_counter",
    "parameters": {"type": "object", "properties": {"count": {"type": "integer"}}},
}
TOOLS = [CONVERT_TOOL, COUNTER_TOOL]


def rendered_call(name: str, arguments: str) -> str:
    """What the server renders for a past assistant call (the non-token-id path of the next turn)."""
    call = {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}
    [message] = render_tools_into_messages([{"role": "assistant", "content": None, "tool_calls": [call]}], [], "none")
    return message["content"]


@pytest.fixture(scope="module")
def grammar():
    return parse(tool_call_grammar(TOOLS, "auto"))


def repeats_a_key(text: str) -> bool:
    repeated = []

    def pairs(items: list[tuple[str, object]]) -> dict:
        keys = [key for key, _ in items]
        repeated.extend(key for key in keys if keys.count(key) > 1)
        return dict(items)

    json.loads(text.removeprefix("<tool_call>").removesuffix("</tool_call>"), object_pairs_hook=pairs)
    return bool(repeated)


def test_every_text_the_grammar_admits_is_the_rendering_of_the_call_it_makes(grammar):
    rng = random.Random(18)
    checked = 0
    for _ in range(400):
        text = grammar.sample(rng)
        assert grammar.matches(text)
        if repeats_a_key(text):
            continue  # the one exception: a free-form object (no declared properties) naming a key twice
        checked += 1
        pieces = split_tool_calls(text, ["convert", "increment_counter"])
        assert len(pieces) == 1 and not isinstance(pieces[0], str), text  # one call, no stray text
        call = pieces[0]["function"]
        assert rendered_call(call["name"], call["arguments"]) == text
    assert checked > 300


@pytest.mark.parametrize(
    "arguments",
    [
        {"value": 1.5, "from_unit": "km", "to_unit": "m"},
        {"value": -3, "from_unit": 'a "quoted" \\ name\nline', "to_unit": "°C", "precision": 0, "exact": False},
        {"value": 0.0001, "from_unit": "é/中", "to_unit": "ft", "tags": [], "note": None, "options": {}},
        {"value": 1234567.125, "from_unit": "", "to_unit": "m", "tags": ["x", "y"], "extra": {"k": [1, "v", None]}},
    ],
)
def test_the_rendering_of_a_call_is_admitted(grammar, arguments):
    assert grammar.matches(rendered_call("convert", json.dumps(arguments)))


def test_the_counter_call_and_its_optional_argument(grammar):
    assert grammar.matches(rendered_call("increment_counter", "{}"))
    assert grammar.matches(rendered_call("increment_counter", '{"count": 3}'))


@pytest.mark.parametrize(
    "call",
    [
        '{"name": "convert", "arguments": {"value": 1, "from_unit": "km", "to_unit": "m"}}',  # bare JSON
        '<tool_call>{"name":"increment_counter","arguments":{}}</tool_call>',  # other spacing
        '<tool_call>{"name": "increment_counter", "arguments": {"count": 03}}</tool_call>',
        '<tool_call>{"name": "increment_counter", "arguments": {"count": -0}}</tool_call>',
        '<tool_call>{"name": "convert", "arguments": {"value": 1.50, "from_unit": "km", "to_unit": "m"}}</tool_call>',
        '<tool_call>{"name": "convert", "arguments": {"value": 1e5, "from_unit": "km", "to_unit": "m"}}</tool_call>',
        '<tool_call>{"name": "convert", "arguments": {"value": 0.00001, "from_unit": "k", "to_unit": "m"}}</tool_call>',
        '<tool_call>{"name": "convert", "arguments": {"value": 1, "from_unit": "\\u00e9", "to_unit": "m"}}</tool_call>',
        '<tool_call>{"name": "convert", "arguments": {"value": 1, "from_unit": "a\\/b", "to_unit": "m"}}</tool_call>',
        '<tool_call>{"name": "convert", "arguments": {"from_unit": "km", "value": 1, "to_unit": "m"}}</tool_call>',
        '<tool_call>{"name": "convert", "arguments": {"value": 1, "from_unit": "km", "to_unit": "yd"}}</tool_call>',
        '<tool_call>{"name": "delete_all", "arguments": {}}</tool_call>',
    ],
)
def test_other_spellings_of_a_call_are_refused(grammar, call):
    assert not grammar.matches(call)


def test_a_forced_tool_choice_admits_only_that_tool():
    forced = parse(tool_call_grammar(TOOLS, {"type": "function", "name": "increment_counter"}))
    assert forced.matches(rendered_call("increment_counter", '{"count": 1}'))
    assert not forced.matches(rendered_call("convert", '{"value": 1, "from_unit": "km", "to_unit": "m"}'))
    assert tool_call_grammar([], "required") is None


def test_a_forced_call_bans_end_tokens_the_template_does_not_close_turns_with_and_is_marked_constrained():
    request = {"grammar": 'root ::= "x"', "logit_bias": [[5, -1.0]]}
    _ban_tokens(request, [0])
    assert request["logit_bias"] == [[5, -1.0], [0, False]]
    openai_shaped = {"logit_bias": {"7": -2}}
    _ban_tokens(openai_shaped, [0])
    assert openai_shaped["logit_bias"] == {"7": -2, "0": False}
    assert _is_constrained(request)
    assert _is_constrained({"response_format": {"type": "json_schema", "json_schema": {}}})
    assert not _is_constrained({"response_format": {"type": "text"}})
