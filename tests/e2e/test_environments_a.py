"""Four example environments end to end: `ng_run` (a real subprocess) + `ng_collect_rollouts` (the CLI),
with a scripted upstream playing each environment's tool calls and answers.

One stack per environment: example_multi_step, example_stateful_counter, mcqa, structured_outputs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nemo_gym.testing.inprocess import free_port
from nemo_gym.testing.ng_run_process import NgRunProcess
from nemo_gym.testing.scripted_openai import ScriptedOpenAI, Turn
from tests.conftest import PROJECT_ROOT, cli

pytestmark = pytest.mark.slow
OPENAI_MODEL_CONFIG = "responses_api_models/openai_model/configs/openai_model.yaml"


def env_paths(env: str) -> tuple[str, str]:
    return f"resources_servers/{env}/configs/{env}.yaml", f"resources_servers/{env}/data/example.jsonl"


def tasks(env: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (PROJECT_ROOT / env_paths(env)[1]).read_text().splitlines()]


def user_text(body: dict[str, Any]) -> str:
    return next(item["content"] for item in body["input"] if item.get("role") == "user")


def items_of(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [item for item in body["input"] if item.get("type") == kind]


def NgRun(env: str, upstream: ScriptedOpenAI, head_port: int) -> NgRunProcess:
    """`ng_run` for one environment against a scripted upstream."""
    return NgRunProcess(
        [env_paths(env)[0], OPENAI_MODEL_CONFIG],
        f"+head_server.port={head_port}",
        f"+policy_base_url={upstream.url}",
        "+policy_api_key=sk-test",
        "+policy_model_name=scripted-model",
    )


def collect(
    env: str, script: Callable[[dict[str, Any]], Turn], tmp_path: Path
) -> tuple[list[dict[str, Any]], str, ScriptedOpenAI]:
    """Serve `env` with `ng_run`, collect one rollout per example task, and return rows in task order."""
    head_port = free_port()
    output = tmp_path / f"{env}_rollouts.jsonl"
    with ScriptedOpenAI(script) as upstream:
        stack = NgRun(env, upstream, head_port)
        try:
            stack.wait_ready()
            result = cli(
                "ng_collect_rollouts",
                f"+agent_name={env}_simple_agent",
                f"+input_jsonl_fpath={env_paths(env)[1]}",
                f"+output_jsonl_fpath={output}",
                "+num_samples_in_parallel=5",
                f"+head_server.port={head_port}",
                timeout=60,
            )
        finally:
            stack.stop()
        assert stack.process.returncode == 0, stack.output
    assert result.returncode == 0, result.stderr
    assert "5/5" in result.stderr
    rows = sorted((json.loads(line) for line in output.read_text().splitlines()), key=lambda row: row["_ng_task_index"])
    assert [row["_ng_task_index"] for row in rows] == [0, 1, 2, 3, 4]
    return rows, result.stdout, upstream


# ---- example_multi_step ------------------------------------------------------------------------


def multi_step_script(body: dict[str, Any]) -> Turn:
    """Look up each expected synonym, one call per turn, then extract the values the tool returned."""
    synonyms = next(
        t["expected_synonyms"]
        for t in tasks("example_multi_step")
        if t["responses_create_params"]["input"][-1]["content"] == user_text(body)
    )
    lookups = {call["call_id"] for call in items_of(body, "function_call") if call["name"] == "get_synonym_value"}
    values = [
        json.loads(item["output"])["synonym_value"]
        for item in items_of(body, "function_call_output")
        if item["call_id"] in lookups
    ]
    if len(values) < len(synonyms):
        return Turn(tool_calls=[("get_synonym_value", json.dumps({"synonym": synonyms[len(values)]}))])
    if not any(call["name"] == "extract_synonym_values" for call in items_of(body, "function_call")):
        return Turn(tool_calls=[("extract_synonym_values", json.dumps({"synonym_values": values}))])
    return Turn(text=f"Extracted {len(synonyms)} values.")


def test_example_multi_step(tmp_path):
    rows, stdout, upstream = collect("example_multi_step", multi_step_script, tmp_path)
    for task, row in zip(tasks("example_multi_step"), rows):
        assert row["reward"] == 1.0 and row["accuracy"] is True and row["set_overlap"] == 1.0
        assert row["parsed_synonym_values"] == task["expected_synonym_values"]
        calls = [item for item in row["response"]["output"] if item["type"] == "function_call"]
        assert [call["name"] for call in calls] == ["get_synonym_value"] * len(task["expected_synonyms"]) + [
            "extract_synonym_values"
        ]
    assert "mean/reward 1.0000" in stdout
    # The task's parallel_tool_calls: false reached the model.
    assert upstream.requests and all(request["parallel_tool_calls"] is False for request in upstream.requests)


# ---- example_stateful_counter ----------------------------------------------------------------------

COUNTER_INCREMENTS = {  # user prompt -> the increments it asks for, in order
    "add 1 then add 2 then get the count": [1, 2],
    "Please add 5 to the counter and tell me what it shows.": [5],
    "add 10, then add 4, then add 1, and report the count": [10, 4, 1],
    "Subtract 3 from the counter (add -3), then read it back.": [-3],
    "add 2 twice, then add 6, then get the count": [2, 2, 6],
}


def counter_script(body: dict[str, Any]) -> Turn:
    increments = COUNTER_INCREMENTS[user_text(body)]
    calls = items_of(body, "function_call")
    if len(calls) < len(increments):
        return Turn(tool_calls=[("increment_counter", json.dumps({"count": increments[len(calls)]}))])
    if len(calls) == len(increments):
        return Turn(tool_calls=[("get_counter_value", "{}")])
    count = json.loads(items_of(body, "function_call_output")[-1]["output"])["count"]
    return Turn(text=f"The counter reads {count}.")


def test_example_stateful_counter(tmp_path):
    rows, stdout, _ = collect("example_stateful_counter", counter_script, tmp_path)
    for task, row in zip(tasks("example_stateful_counter"), rows):
        assert row["reward"] == 1.0 and row["final_count"] == task["expected_count"]
        assert row["response"]["output"][-1]["content"][0]["text"] == f"The counter reads {task['expected_count']}."
    assert "mean/reward 1.0000" in stdout


# ---- mcqa ------------------------------------------------------------------------------------------


def mcqa_script(body: dict[str, Any]) -> Turn:
    """Answer each question in its own format; the regex row gets a wrong letter on purpose."""
    task = next(t for t in tasks("mcqa") if t["responses_create_params"]["input"][-1]["content"] == user_text(body))
    answer = task["expected_answer"]
    text = next(option[answer] for option in task["options"] if answer in option)
    if task.get("template_metadata"):
        return Turn(text="Thinking it over.\nFinal choice: [D]")
    return Turn(
        text={
            "strict_single_letter_boxed": f"The answer is \\boxed{{{answer}}}",
            "lenient_boxed": f"\\boxed{{\\text{{{text}}}}}",
            "lenient_answer_colon": f"Let me think.\nAnswer: {text}",
        }[task["grading_mode"]]
    )


def test_mcqa(tmp_path):
    rows, stdout, _ = collect("mcqa", mcqa_script, tmp_path)
    assert [row["reward"] for row in rows] == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert [row["extracted_answer"] for row in rows] == ["B", "C", "B", "D", "D"]
    assert [row["expected_answer"] for row in rows] == ["B", "C", "B", "D", "B"]
    assert all(row["uuid"] and row["options"] for row in rows)
    assert "mean/reward 0.8000" in stdout


# ---- structured_outputs ---------------------------------------------------------------------------

STRUCTURED_ANSWERS = [
    {"name": "Dana Whitfield", "phone": "+1-555-0134", "email": "dana.w@example.org"},
    {
        "title": "The Left Hand of Darkness",
        "author": "Ursula K. Le Guin",
        "year": 1969,
        "pages": 304,
        "genres": ["science fiction", "anthropological fiction"],
    },
    {
        "items": [
            {"name": "apple", "quantity": 3, "unit_price": 0.4},
            {"name": "bread", "quantity": 1, "unit_price": 2.75},
            {"name": "milk", "quantity": 2, "unit_price": 1.1},
        ],
        "currency": "USD",
    },
    {
        "ticket": {
            "customer": {"id": "C-1042", "name": "Jonas Berg"},
            "summary": "Mobile app crashes on login since the last update",
            "priority": "high",
            "tags": ["mobile", "crash", "login"],
        }
    },
    {
        "city": "Oslo",
        "temperature_c": 4.5,
        "conditions": "light rain",
        "humidity_percent": 87,
    },  # wind_speed_kmh left out
]


def structured_script(body: dict[str, Any]) -> Turn:
    index = next(
        i
        for i, t in enumerate(tasks("structured_outputs"))
        if t["responses_create_params"]["input"][-1]["content"] == user_text(body)
    )
    text = json.dumps(STRUCTURED_ANSWERS[index], indent=2)
    return Turn(text=f"```json\n{text}\n```" if index % 2 else text)


def test_structured_outputs(tmp_path):
    rows, stdout, _ = collect("structured_outputs", structured_script, tmp_path)
    assert [row["reward"] for row in rows] == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert all(row["parse_error"] is None for row in rows)
    assert rows[4]["schema_valid"] is False
    assert re.match(r"\$: 'wind_speed_kmh' is a required property", rows[4]["validation_error"])
    assert "mean/reward 0.8000" in stdout
