"""structured_outputs: strictifying schemas, and `verify` on hand-made replies (valid, invalid, malformed, empty)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from nemo_gym.testing.inprocess import ThreadedServer, registry_client
from resources_servers.structured_outputs.app import (
    StructuredOutputsConfig,
    StructuredOutputsServer,
    StructuredOutputsVerifyRequest,
    strictify,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "example.jsonl"
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "tags": {
            "type": "array",
            "items": {"type": "object", "properties": {"label": {"type": "string"}, "weight": {"type": "number"}}},
        },
        "owner": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": []},
        "note": {"type": ["string", "null"]},
    },
    "required": ["name"],
}
VALID = {"name": "x", "tags": [{"label": "a", "weight": 0.5}], "owner": {"id": 7}, "note": None}


def make_server() -> StructuredOutputsServer:
    return StructuredOutputsServer(
        config=StructuredOutputsConfig(name="structured_outputs", domain="instruction_following"),
        server_client=registry_client({}),
    )


def reply(text: str | None) -> list[dict[str, Any]]:
    if text is None:
        return []
    return [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}
    ]


def request(output: list[dict[str, Any]], schema: Any = SCHEMA) -> StructuredOutputsVerifyRequest:
    return StructuredOutputsVerifyRequest.model_validate(
        {
            "responses_create_params": {"input": [{"role": "user", "content": "Reply in JSON."}]},
            "response": {"id": "resp_1", "output": output},
            "schema_str": schema if isinstance(schema, str) else json.dumps(schema),
        }
    )


async def verify(text: str | None, schema: Any = SCHEMA) -> dict[str, Any]:
    return (await make_server().verify(request(reply(text), schema))).model_dump()


def test_strictify_reaches_every_object_and_leaves_the_input_alone():
    original = json.dumps(SCHEMA)
    strict = strictify(SCHEMA)
    assert json.dumps(SCHEMA) == original
    assert strict["required"] == ["name", "tags", "owner", "note"] and strict["additionalProperties"] is False
    item = strict["properties"]["tags"]["items"]
    assert item["required"] == ["label", "weight"] and item["additionalProperties"] is False
    assert strict["properties"]["owner"]["required"] == ["id"]
    combinators = strictify(
        {"anyOf": [{"type": "object", "properties": {"a": {}}}], "$defs": {"D": {"type": "object"}}}
    )
    assert combinators["anyOf"][0]["additionalProperties"] is False and combinators["anyOf"][0]["required"] == ["a"]
    assert combinators["$defs"]["D"] == {"type": "object", "required": [], "additionalProperties": False}


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(VALID),
        f"```json\n{json.dumps(VALID, indent=2)}\n```",
        f"```\n{json.dumps(VALID)}```",
        f"\n  {json.dumps(VALID)}  \n",
    ],
)
async def test_valid_json_scores_one(text):
    row = await verify(text)
    assert row["reward"] == 1.0 and row["schema_valid"] is True
    assert row["parse_error"] is None and row["validation_error"] is None
    assert json.loads(row["schema_str"]) == SCHEMA  # the task field rides along


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({k: v for k, v in VALID.items() if k != "note"}, "$: 'note' is a required property"),  # optional made required
        (VALID | {"extra": 1}, "$: Additional properties are not allowed"),
        (VALID | {"tags": [{"label": "a", "weight": 0.5, "colour": "red"}]}, "$.tags[0]: Additional properties"),
        (VALID | {"owner": {}}, "$.owner: 'id' is a required property"),
        (VALID | {"name": 3}, "$.name: 3 is not of type 'string'"),
        ([VALID], "$: [{"),
    ],
)
async def test_schema_violations_score_zero_with_a_short_reason(value, where):
    row = await verify(json.dumps(value))
    assert row["reward"] == 0.0 and row["schema_valid"] is False and row["parse_error"] is None
    assert row["validation_error"].startswith(where) and len(row["validation_error"]) <= 200


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"name": "x",', "invalid JSON: "),
        ('Sure! Here is the JSON: {"name": "x"}', "invalid JSON: "),
        ('```json\n{"name": "x"}\n``` hope this helps', "invalid JSON: "),
        ("'single quotes'", "invalid JSON: "),
    ],
)
async def test_malformed_replies_score_zero_with_a_parse_error(text, error):
    row = await verify(text)
    assert row["reward"] == 0.0 and row["schema_valid"] is False and row["validation_error"] is None
    assert row["parse_error"].startswith(error) and "line 1" in row["parse_error"]


@pytest.mark.parametrize("text", [None, "", "   ", "```json\n```"])
async def test_empty_replies_score_zero(text):
    row = await verify(text)
    assert row["reward"] == 0.0 and row["parse_error"] == "empty response" and row["validation_error"] is None


async def test_scalar_schemas_and_declared_drafts_work():
    assert (await verify("42", {"type": "integer", "minimum": 1}))["reward"] == 1.0
    draft7 = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"a": {"type": "array", "items": [{"type": "object", "properties": {"b": {"type": "string"}}}]}},
    }
    assert (await verify('{"a": [{"b": "x"}]}', draft7))["reward"] == 1.0
    assert (await verify('{"a": [{"b": "x", "c": 1}]}', draft7))["validation_error"].startswith("$.a[0]: Additional")


def test_bad_schema_rows_are_errors_over_http():
    with ThreadedServer(make_server().setup_webserver()) as server:
        good = httpx.post(f"{server.url}/verify", json=request(reply(json.dumps(VALID))).model_dump(mode="json"))
        assert good.status_code == 200 and good.json()["reward"] == 1.0
        for schema in ("{not json", '["a list"]', json.dumps({"type": "no-such-type"})):
            bad = httpx.post(f"{server.url}/verify", json=request(reply("{}"), schema).model_dump(mode="json"))
            assert bad.status_code >= 400 and "schema_str" in bad.json()["error"]["message"]
        missing = httpx.post(
            f"{server.url}/verify",
            json={"responses_create_params": {"input": "hi"}, "response": {"id": "r", "output": []}},
        )
        assert missing.status_code == 422 and "schema_str" in missing.text


def test_example_schemas_are_valid_and_satisfiable():
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    assert len(rows) == 5
    for row in rows:
        schema = json.loads(row["schema_str"])
        assert row["schema_str"] in row["responses_create_params"]["input"][-1]["content"]
        assert strictify(schema)["additionalProperties"] is False


# ---- NeMo Gym's tool_call rows (shape modelled by hand) ---------------------------------------------


def tool_call(name: str, arguments: Any) -> dict[str, Any]:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"type": "function_call", "call_id": f"call_{name}", "name": name, "arguments": text, "status": "completed"}


def tool_call_row(output: list[dict[str, Any]], **task: Any) -> dict[str, Any]:
    return {
        "responses_create_params": {
            "input": [{"role": "user", "content": "Record the item with the tool."}],
            "tools": [{"type": "function", "name": "record_item", "parameters": SCHEMA, "strict": True}],
            "tool_choice": "required",
            "parallel_tool_calls": False,
        },
        "response": {"id": "resp_1", "output": output},
        "schema_str": json.dumps(SCHEMA),
        "schema_type": "json",
        "response_mode": "tool_call",
        "tool_name": "record_item",
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "num_tools": 1,
        **task,
    }


@pytest.mark.parametrize(
    ("output", "task", "reward", "error"),
    [
        ([tool_call("record_item", VALID)], {}, 1.0, None),
        ([tool_call("record_item", {"item": VALID})], {"tool_payload_key": "item"}, 1.0, None),
        ([tool_call("record_item", {"name": "x"})], {}, 0.0, None),  # valid JSON, misses required fields
        ([], {}, 0.0, "no function call in the response"),
        ([tool_call("record_item", VALID), tool_call("other", VALID)], {}, 0.0, "expected exactly one function call"),
        ([tool_call("other", VALID)], {}, 0.0, "expected a call to 'record_item'"),
        ([tool_call("record_item", "{oops")], {}, 0.0, "invalid JSON arguments"),
        ([tool_call("record_item", VALID)], {"tool_payload_key": "item"}, 0.0, "no 'item'"),
    ],
)
def test_tool_call_rows_score_the_one_function_call(output, task, reward, error):
    with ThreadedServer(make_server().setup_webserver()) as server:
        answer = httpx.post(f"{server.url}/verify", json=tool_call_row(output, **task))
    assert answer.status_code == 200, answer.text
    row = answer.json()
    assert row["reward"] == reward
    assert (row["parse_error"] is None) if error is None else (error in row["parse_error"])


def test_a_schema_type_other_than_json_is_refused_naming_it():
    with ThreadedServer(make_server().setup_webserver()) as server:
        answer = httpx.post(f"{server.url}/verify", json=tool_call_row([], schema_type="yaml", response_mode="text"))
    assert answer.status_code == 400 and "schema_type 'yaml'" in answer.text
