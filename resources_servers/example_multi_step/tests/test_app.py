"""example_multi_step: the tools over HTTP and `verify` on hand-made responses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from nemo_gym.testing.inprocess import ThreadedServer, registry_client
from resources_servers.example_multi_step.app import (
    ExampleMultiStepConfig,
    ExampleMultiStepServer,
    MultiStepVerifyRequest,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "example.jsonl"
EXPECTED = [633, 856]  # Joyful, Enormous


def make_server() -> ExampleMultiStepServer:
    return ExampleMultiStepServer(
        config=ExampleMultiStepConfig(name="example_multi_step", domain="instruction_following"),
        server_client=registry_client({}),
    )


def call(name: str, arguments: Any) -> dict[str, Any]:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"type": "function_call", "call_id": f"call_{name}", "name": name, "arguments": text}


def message(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def request(output: list[dict[str, Any]]) -> MultiStepVerifyRequest:
    return MultiStepVerifyRequest.model_validate(
        {
            "responses_create_params": {
                "input": [{"role": "user", "content": "Words: happy, big."}],
                "parallel_tool_calls": False,
            },
            "response": {"id": "resp_1", "output": output},
            "id": 0,
            "expected_synonyms": ["Joyful", "Enormous"],
            "expected_synonym_values": EXPECTED,
        }
    )


async def verify(output: list[dict[str, Any]]) -> dict[str, Any]:
    return (await make_server().verify(request(output))).model_dump()


async def test_correct_last_extract_call_scores_one():
    row = await verify(
        [
            call("get_synonym_value", {"synonym": "Joyful"}),
            {"type": "function_call_output", "call_id": "call_get_synonym_value", "output": '{"synonym_value": 633}'},
            call("extract_synonym_values", {"synonym_values": EXPECTED}),
            message("Done."),
        ]
    )
    assert row["reward"] == 1.0 and row["accuracy"] is True
    assert row["parsed_synonym_values"] == EXPECTED and row["set_overlap"] == 1.0
    assert row["expected_synonyms"] == ["Joyful", "Enormous"] and row["id"] == 0  # task fields ride along


async def test_only_the_last_extract_call_counts():
    corrected = await verify(
        [
            call("extract_synonym_values", {"synonym_values": [1, 2]}),
            call("extract_synonym_values", {"synonym_values": EXPECTED}),
        ]
    )
    assert corrected["reward"] == 1.0
    regressed = await verify(
        [
            call("extract_synonym_values", {"synonym_values": EXPECTED}),
            call("extract_synonym_values", {"synonym_values": [856]}),
        ]
    )
    assert regressed["reward"] == 0.0 and regressed["set_overlap"] == 0.5


async def test_wrong_order_scores_zero_with_full_overlap():
    row = await verify([call("extract_synonym_values", {"synonym_values": EXPECTED[::-1]})])
    assert row["reward"] == 0.0 and row["accuracy"] is False
    assert row["parsed_synonym_values"] == EXPECTED[::-1] and row["set_overlap"] == 1.0


async def test_wrong_values_score_zero():
    row = await verify([call("extract_synonym_values", {"synonym_values": [633, 1]})])
    assert row["reward"] == 0.0 and row["set_overlap"] == 0.5


@pytest.mark.parametrize(
    "arguments",
    [
        '{"synonym_values": [633, 8',
        "[633, 856]",
        '{"synonym_values": "633,856"}',
        '{"synonym_values": [633, "856"]}',
        '{"values": [633, 856]}',
        "",
    ],
)
async def test_malformed_last_call_is_no_answer(arguments):
    row = await verify(
        [call("extract_synonym_values", {"synonym_values": EXPECTED}), call("extract_synonym_values", arguments)]
    )
    assert row["reward"] == 0.0 and row["parsed_synonym_values"] is None and row["set_overlap"] == 0.0


@pytest.mark.parametrize(
    "output", [[], [message("The values are 633 and 856.")], [call("get_synonym_value", {"synonym": "Joyful"})]]
)
async def test_no_extract_call_scores_zero(output):
    row = await verify(output)
    assert row["reward"] == 0.0 and row["parsed_synonym_values"] is None and row["accuracy"] is False


def test_tools_and_verify_over_http():
    with ThreadedServer(make_server().setup_webserver()) as server:
        value = httpx.post(f"{server.url}/get_synonym_value", json={"synonym": "Joyful"})
        assert value.json() == {"synonym_value": 633}
        assert httpx.post(f"{server.url}/extract_synonym_values", json={"synonym_values": [1]}).json() == {
            "success": True
        }
        assert httpx.post(f"{server.url}/get_synonym_value", json={}).status_code == 422
        body = request([call("extract_synonym_values", {"synonym_values": EXPECTED})]).model_dump(mode="json")
        row = httpx.post(f"{server.url}/verify", json=body).json()
        assert row["reward"] == 1.0 and row["parsed_synonym_values"] == EXPECTED


def test_example_data_is_consistent_with_the_tool():
    rows = [json.loads(line) for line in DATA.read_text().splitlines()]
    assert len(rows) == 5
    for row in rows:
        assert row["responses_create_params"]["parallel_tool_calls"] is False
        assert row["expected_synonym_values"] == [sum(map(ord, s)) for s in row["expected_synonyms"]]
        user = row["responses_create_params"]["input"][-1]["content"]
        assert all(synonym in user for synonym in row["expected_synonyms"])  # every answer is in the bank
