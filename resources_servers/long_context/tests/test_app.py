"""long_context: haystack generation, config-driven length, verify on exact, partial, distractor,
malformed and empty answers, and end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import pytest

from nemo_gym.testing.inprocess import ThreadedServer, registry_client
from nemo_gym.testing.scripted_openai import Turn
from resources_servers.long_context.app import LongContextConfig, LongContextServer, LongContextVerifyRequest
from resources_servers.long_context.generate_tasks import task_row
from resources_servers.long_context.haystack import KINDS, make_task, needle
from tests.conftest import PROJECT_ROOT
from tests.e2e.env_rollouts import environment_stack, example_tasks, user_text

TASKS = example_tasks("long_context")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("words", [200, 3000])
def test_haystack_holds_each_needle_once_at_the_asked_length(kind, words):
    task = make_task(7, kind, words)
    context = task["context"]
    assert words <= len(context.split()) <= words + 60
    for value in task["expected_values"] + task["distractor_values"]:
        assert context.count(value) == 1
    assert all(key in task["question"] for key in task["asked_keys"])
    for value in task["expected_values"]:  # stated for an asked key
        assert any(needle(key, value) in context for key in task["asked_keys"])
    for value in task["distractor_values"]:  # stated for some other key
        assert not any(needle(key, value) in context for key in task["asked_keys"]) and value in context
    assert make_task(7, kind, words) == task  # deterministic


def test_kinds_ask_for_the_right_number_of_values():
    assert [len(make_task(1, kind, 300)["expected_values"]) for kind in KINDS] == [1, 1, 4, 2]
    assert [len(make_task(1, kind, 300)["distractor_values"]) for kind in KINDS] == [0, 3, 0, 2]


def test_generator_reads_the_length_from_the_config(tmp_path):
    config = tmp_path / "lc.yaml"
    config.write_text(
        "lc:\n  resources_servers:\n    long_context:\n      domain: long_context\n      context_words: 2500\n"
        "      kinds: [multiquery]\n      distractors: 5\n"
    )
    output = tmp_path / "tasks.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            "resources_servers/long_context/generate_tasks.py",
            "--output",
            str(output),
            "--count",
            "2",
            "--config",
            str(config),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["kind"] for row in rows] == ["multiquery", "multiquery"] and rows[0]["context_words"] == 2500
    assert len(rows[0]["distractor_values"]) == 4  # 6 needles, 2 asked
    assert len(rows[0]["responses_create_params"]["input"][0]["content"].split()) > 2500


def test_example_tasks_are_what_the_generator_writes():
    assert [task["kind"] for task in TASKS] == ["single", "multikey", "multivalue", "multiquery", "single"]
    for task in TASKS:
        assert task_row(task["seed"], task["kind"], task["context_words"], 3) == task


def reply(text: str) -> list[dict[str, Any]]:
    return [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}
    ]


async def verify(task: dict[str, Any], output: list[dict[str, Any]]) -> dict[str, Any]:
    server = LongContextServer(
        config=LongContextConfig(name="lc", domain="long_context"), server_client=registry_client({})
    )
    body = LongContextVerifyRequest.model_validate(task | {"response": {"id": "r", "output": output}})
    return (await server.verify(body)).model_dump()


@pytest.mark.parametrize("index", range(5))
async def test_exact_answers_score_one(index):
    values = TASKS[index]["expected_values"]
    row = await verify(TASKS[index], reply(", ".join(reversed(values))))
    assert row["reward"] == 1.0 and row["recall"] == 1.0 and not row["distractor_hit"]


async def test_partial_wrong_and_distractor_answers_score_zero():
    multivalue, multikey = TASKS[2], TASKS[1]
    partial = await verify(multivalue, reply(", ".join(multivalue["expected_values"][:2])))
    assert partial["reward"] == 0.0 and partial["recall"] == 0.5
    everything = await verify(multikey, reply(", ".join(multikey["expected_values"] + multikey["distractor_values"])))
    assert everything["reward"] == 0.0 and everything["recall"] == 1.0 and everything["distractor_hit"]
    wrong = await verify(multikey, reply(multikey["distractor_values"][0]))
    assert wrong["reward"] == 0.0 and wrong["recall"] == 0.0
    off_by_digit = await verify(TASKS[0], reply(TASKS[0]["expected_values"][0] + "1"))  # 8 digits is not the value
    assert off_by_digit["reward"] == 0.0 and off_by_digit["found_values"] == []


@pytest.mark.parametrize("output", [[], reply(""), reply("I could not find it.")])
async def test_empty_replies_score_zero(output):
    row = await verify(TASKS[0], output)
    assert row["reward"] == 0.0 and row["found_values"] == []


def test_malformed_task_is_rejected_with_the_field_named():
    server = LongContextServer(
        config=LongContextConfig(name="lc", domain="long_context"), server_client=registry_client({})
    )
    with ThreadedServer(server.setup_webserver()) as http:
        body = TASKS[0] | {"response": {"id": "r", "output": reply("1")}}
        assert httpx.post(f"{http.url}/verify", json=body | {"expected_values": []}).status_code == 422
        bad_kind = httpx.post(f"{http.url}/verify", json=body | {"kind": "haystack"})
        assert bad_kind.status_code == 422 and "kind" in bad_kind.text


# ---- end to end ------------------------------------------------------------------------------------


def policy(mode: str, body: dict[str, Any]) -> Turn:
    task = next(t for t in TASKS if user_text(t["responses_create_params"]) == user_text(body))
    values = task["expected_values"] if mode == "correct" else [task["expected_values"][0][::-1]]
    return Turn(text=", ".join(values))


@pytest.mark.slow
def test_end_to_end_right_and_wrong_policies(tmp_path):
    with environment_stack("long_context", policy, tmp_path) as stack:
        right, stdout = stack.collect("correct")
        wrong, _ = stack.collect("wrong")
    assert [row["reward"] for row in right] == [1.0] * 5
    assert "mean/reward 1.0000" in stdout
    assert [row["reward"] for row in wrong] == [0.0] * 5
