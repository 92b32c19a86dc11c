"""tool_call_arguments: the type-aware matcher, verify on right, wrong, malformed and empty calls, and end to end."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from nemo_gym.testing.inprocess import ThreadedServer, registry_client
from nemo_gym.testing.scripted_openai import Turn
from resources_servers.tool_call_arguments.app import (
    ToolCallArgumentsConfig,
    ToolCallArgumentsServer,
    ToolCallVerifyRequest,
)
from resources_servers.tool_call_arguments.matching import arguments_match
from tests.e2e.env_rollouts import environment_stack, example_tasks, user_text

FLIGHTS = {
    "type": "object",
    "required": ["origin", "destination", "date"],
    "properties": {
        "origin": {"type": "string"},
        "destination": {"type": "string"},
        "date": {"type": "string"},
        "passengers": {"type": "integer", "default": 1},
        "cabin": {"type": "string", "enum": ["economy", "business"], "default": "economy"},
        "stops": {"type": "array", "items": {"type": "string"}},
        "prices": {"type": "array", "items": {"type": "number"}},
        "filters": {
            "type": "object",
            "properties": {"max_price": {"type": "number"}, "refundable": {"type": "boolean"}},
        },
    },
}
EXPECTED = {"origin": "OSL", "destination": "LIS", "date": "2026-05-01", "passengers": 2}


def problems(actual: dict[str, Any], expected: dict[str, Any] = EXPECTED, ordered: set[str] | None = None) -> list[str]:
    return arguments_match(actual, expected, FLIGHTS, ordered or set())


@pytest.mark.parametrize(
    "actual",
    [
        {"origin": "OSL", "destination": "LIS", "date": "2026-05-01", "passengers": 2},
        {"origin": " osl", "destination": "lis ", "date": "2026-05-01", "passengers": 2.0},  # case, spaces, 2.0 == 2
        {
            "origin": "OSL",
            "destination": "LIS",
            "date": "2026-05-01",
            "passengers": 2,
            "cabin": "economy",
        },  # the default, explicit
    ],
)
def test_matching_arguments(actual):
    assert problems(actual) == []


@pytest.mark.parametrize(
    ("actual", "reason"),
    [
        ({"origin": "OSL", "destination": "LIS", "date": "2026-05-01"}, "arguments.passengers: missing"),
        ({"origin": "OSL", "destination": "LIS", "date": "2026-05-01", "passengers": "2"}, "expected a number"),
        ({"origin": "OSL", "destination": "LIS", "date": "2026-05-01", "passengers": 2.5}, "expected an integer"),
        ({"origin": "OSL", "destination": "LIS", "date": "2026-05-01", "passengers": 3}, "3 != 2"),
        (
            {"origin": "OSL", "destination": "LIS", "date": "2026-05-01", "passengers": 2, "cabin": "business"},
            "not expected here",
        ),
        (
            {"origin": "OSL", "destination": "LIS", "date": "2026-05-01", "passengers": 2, "seat": "12A"},
            "not a parameter",
        ),
        ({"destination": "LIS", "date": "2026-05-01", "passengers": 2}, "arguments.origin: missing"),
        ({"origin": True, "destination": "LIS", "date": "2026-05-01", "passengers": 2}, "expected a string"),
    ],
)
def test_mismatching_arguments_are_named(actual, reason):
    found = problems(actual)
    assert found and reason in found[0], found


def test_enum_is_exact_and_optional_default_may_be_omitted():
    expected = {"origin": "OSL", "destination": "LIS", "date": "d", "cabin": "economy"}
    assert problems({"origin": "OSL", "destination": "LIS", "date": "d"}, expected) == []  # default == expected
    assert problems(
        {"origin": "OSL", "destination": "LIS", "date": "d", "cabin": "Economy"}, expected
    )  # enums are exact


def test_lists_are_order_free_unless_ordered_and_nested_objects_compare_by_schema():
    expected = {
        "origin": "A",
        "destination": "B",
        "date": "d",
        "stops": ["X", "Y"],
        "prices": [1, 2.5],
        "filters": {"max_price": 300, "refundable": True},
    }
    actual = expected | {"stops": ["y", "x"], "prices": [2.5, 1.0], "filters": {"max_price": 300.0, "refundable": True}}
    assert problems(actual, expected) == []
    assert "order does not matter" not in str(problems(actual, expected, {"stops"}))
    assert problems(actual, expected, {"stops"})[0].startswith("arguments.stops[0]")
    assert problems(actual | {"stops": ["X", "X"]}, expected)  # multisets, not sets
    assert problems(actual | {"stops": ["X"]}, expected) == ["arguments.stops: 1 items, expected 2"]
    assert problems(actual | {"filters": {"max_price": 300, "refundable": 1}}, expected)  # 1 is not true


# ---- verify -------------------------------------------------------------------------------------

TASK = example_tasks("tool_call_arguments")[1]  # convert_currency(amount=250.5, USD -> EUR)


def call(name: str, arguments: str) -> dict[str, Any]:
    return {"type": "function_call", "call_id": "call_1", "name": name, "arguments": arguments}


async def verify(output: list[dict[str, Any]], **config: Any) -> dict[str, Any]:
    server = ToolCallArgumentsServer(
        config=ToolCallArgumentsConfig(name="tca", domain="agent", **config), server_client=registry_client({})
    )
    body = ToolCallVerifyRequest.model_validate(TASK | {"response": {"id": "resp_1", "output": output}})
    return (await server.verify(body)).model_dump()


RIGHT = call("convert_currency", json.dumps({"amount": 250.5, "from_currency": "usd", "to_currency": "EUR"}))


async def test_correct_call_scores_one():
    row = await verify([RIGHT])
    assert row["reward"] == 1.0 and row["mismatches"] == [] and row["called_name"] == "convert_currency"
    assert row["expected_call"]["arguments"]["amount"] == 250.5 and row["id"] == "tca-1"


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ([call("get_weather", '{"city": "Lisbon"}')], "called 'get_weather', expected 'convert_currency'"),
        (
            [call("convert_currency", '{"amount": 205.5, "from_currency": "USD", "to_currency": "EUR"}')],
            "205.5 != 250.5",
        ),
        ([call("convert_currency", '{"amount": 250.5, "from_currency": "USD", ')], "arguments are not valid JSON"),
        ([call("convert_currency", '[250.5, "USD", "EUR"]')], "arguments are not a JSON object"),
        ([], "no function call was made"),
        (
            [
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "It is about 230 EUR."}],
                }
            ],
            "no function call was made",
        ),
        ([RIGHT, RIGHT], "2 function calls, expected exactly one"),
    ],
)
async def test_wrong_malformed_and_empty_calls_score_zero(output, reason):
    row = await verify(output)
    assert row["reward"] == 0.0 and reason in row["mismatches"][0], row["mismatches"]


async def test_extra_calls_allowed_when_configured():
    assert (await verify([RIGHT, call("get_weather", "{}")], allow_extra_calls=True))["reward"] == 1.0


def test_tool_route_records_and_verify_rejects_a_task_without_expected_call():
    server = ToolCallArgumentsServer(
        config=ToolCallArgumentsConfig(name="tca", domain="agent"), server_client=registry_client({})
    )
    with ThreadedServer(server.setup_webserver()) as http:
        recorded = httpx.post(f"{http.url}/convert_currency", json={"amount": 1}).json()
        assert recorded["status"] == "recorded" and recorded["function"] == "convert_currency"
        body = {k: v for k, v in TASK.items() if k != "expected_call"} | {"response": {"id": "r", "output": []}}
        missing = httpx.post(f"{http.url}/verify", json=body)
        assert missing.status_code == 422 and "expected_call" in missing.text


# ---- end to end: ng_run + ng_collect_rollouts with a scripted policy ----------------------------------


def policy(mode: str, body: dict[str, Any]) -> Turn:
    """Make each task's expected call; in "wrong" mode, bump every number and swap the first list."""
    task = next(
        t for t in example_tasks("tool_call_arguments") if user_text(t["responses_create_params"]) == user_text(body)
    )
    arguments = dict(task["expected_call"]["arguments"])
    if mode == "wrong":
        first = next(iter(arguments))
        arguments[first] = (
            arguments[first] + 1 if isinstance(arguments[first], (int, float)) else f"not {arguments[first]}"
        )
    return Turn(tool_calls=[(task["expected_call"]["name"], json.dumps(arguments))])


@pytest.mark.slow
def test_end_to_end_right_and_wrong_policies(tmp_path):
    with environment_stack("tool_call_arguments", policy, tmp_path) as stack:
        right, stdout = stack.collect("correct")
        wrong, _ = stack.collect("wrong")
    assert [row["reward"] for row in right] == [1.0] * 5, [row["mismatches"] for row in right]
    assert "mean/reward 1.0000" in stdout
    assert all(row["reward"] == 0.0 and row["mismatches"] for row in wrong)
    # The catch-all tool route answered the call inside the rollout.
    outputs = [item for item in right[0]["response"]["output"] if item["type"] == "function_call_output"]
    assert json.loads(outputs[0]["output"])["status"] == "recorded"
