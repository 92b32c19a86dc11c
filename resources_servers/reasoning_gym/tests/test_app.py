"""reasoning_gym: rows from many generators scored by the package's own scorers, wrong, malformed and
empty answers, the data command, and end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import pytest

from nemo_gym.testing.inprocess import ThreadedServer, registry_client
from nemo_gym.testing.scripted_openai import Turn
from resources_servers.reasoning_gym.app import ReasoningGymConfig, ReasoningGymServer, ReasoningGymVerifyRequest
from resources_servers.reasoning_gym.tasks import generator_names, task_rows
from tests.conftest import PROJECT_ROOT
from tests.e2e.env_rollouts import environment_stack, example_tasks, user_text

TASKS = example_tasks("reasoning_gym")
# Generators whose reference answer is the unique right one (some, like graph_color or rubiks_cube,
# accept many answers and store none that their scorer takes), across the package's families.
GENERATORS = [
    "basic_arithmetic",
    "chain_sum",
    "gcd",
    "lcm",
    "fraction_simplification",
    "complex_arithmetic",  # arithmetic
    "simple_equations",
    "polynomial_multiplication",
    "simple_integration",  # algebra
    "knights_knaves",
    "syllogism",
    "zebra_puzzles",
    "self_reference",
    "circuit_logic",  # logic
    "shortest_path",
    "course_schedule",
    "largest_island",
    "family_relationships",  # graphs
    "mini_sudoku",
    "n_queens",
    "tower_of_hanoi",
    "maze",
    "sokoban",  # games
    "letter_counting",
    "spell_backward",
    "word_sorting",
    "number_sorting",
    "caesar_cipher",  # algorithmic
    "number_sequence",
    "rectangle_count",
    "leg_counting",  # cognition and induction
]
WRONG = "definitely not the answer 8675309"


def server() -> ReasoningGymServer:
    return ReasoningGymServer(config=ReasoningGymConfig(name="rg", domain="math"), server_client=registry_client({}))


def reply(text: str) -> list[dict[str, Any]]:
    return [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}
    ]


async def verify(
    row: dict[str, Any], output: list[dict[str, Any]], on: ReasoningGymServer | None = None
) -> dict[str, Any]:
    body = ReasoningGymVerifyRequest.model_validate(row | {"response": {"id": "r", "output": output}})
    return (await (on or server()).verify(body)).model_dump()


def test_more_than_a_hundred_generators_are_available():
    assert len(generator_names()) > 100


async def test_reference_answers_score_one_and_wrong_answers_less_for_every_listed_generator():
    assert len(set(GENERATORS)) >= 20
    shared = server()
    for name in GENERATORS:
        [row] = list(task_rows(name, size=1, seed=11))
        json.loads(json.dumps(row))  # a row survives JSONL as is
        right = await verify(row, reply(f"Thinking...\n<answer>{row['answer']}</answer>"), shared)
        assert right["reward"] == 1.0, (name, row["answer"], right["extracted_answer"])
        wrong = await verify(row, reply(f"<answer>{WRONG}</answer>"), shared)
        assert wrong["reward"] < 1.0, name


async def test_difficulty_config_reaches_the_generator_and_the_scorer():
    rows = list(
        task_rows(
            "basic_arithmetic",
            size=3,
            seed=1,
            config={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
        )
    )
    assert all(row["metadata"]["num_terms"] == 2 and row["dataset_config"]["max_terms"] == 2 for row in rows)
    assert (await verify(rows[0], reply(f"<answer>{rows[0]['answer']}</answer>")))["reward"] == 1.0


@pytest.mark.parametrize("index", range(5))
async def test_example_rows_right_wrong_malformed_and_empty(index):
    row = TASKS[index]
    assert (await verify(row, reply(f"<answer>{row['answer']}</answer>")))["reward"] == 1.0
    assert (await verify(row, reply(f"<answer>{WRONG}</answer>")))["reward"] < 1.0
    untagged = await verify(row, reply(f"The answer is {row['answer']}"))  # the package's format is required
    assert untagged["reward"] == 0.0 and untagged["extracted_answer"] is None
    for output in ([], reply(""), reply("<answer></answer>")):
        assert (await verify(row, output))["reward"] == 0.0


async def test_a_scorer_that_crashes_on_odd_output_scores_zero_with_the_reason():
    [row] = list(task_rows("prime_factorization", size=1, seed=0))
    result = await verify(row, reply("<answer>two times three</answer>"))
    assert result["reward"] == 0.0 and "ValueError" in result["scoring_error"]


def test_unknown_generator_or_config_is_a_400_naming_it():
    with ThreadedServer(server().setup_webserver()) as http:
        body = TASKS[0] | {"response": {"id": "r", "output": reply("<answer>1</answer>")}}
        unknown = httpx.post(f"{http.url}/verify", json=body | {"dataset_name": "telepathy"})
        assert unknown.status_code == 400 and "unknown reasoning-gym generator 'telepathy'" in unknown.text
        bad_config = httpx.post(f"{http.url}/verify", json=body | {"dataset_config": {"max_terms": "many"}})
        assert bad_config.status_code == 400 and "dataset_config for basic_arithmetic" in bad_config.text


def test_prepare_data_writes_rows_for_chosen_generators(tmp_path):
    output = tmp_path / "rg.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            "resources_servers/reasoning_gym/prepare_data.py",
            "--output",
            str(output),
            "--generators",
            "gcd,maze",
            "--size",
            "3",
            "--seed",
            "5",
            "--config",
            '{"gcd": {"min_value": 10, "max_value": 20}}',
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["dataset_name"] for row in rows] == ["gcd"] * 3 + ["maze"] * 3
    assert all(10 <= int(n) <= 20 for row in rows[:3] for n in row["metadata"]["numbers"])
    bad = subprocess.run(
        [
            sys.executable,
            "resources_servers/reasoning_gym/prepare_data.py",
            "--output",
            str(output),
            "--generators",
            "gcd,telepathy",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown generator(s): telepathy" in bad.stderr


# ---- end to end ------------------------------------------------------------------------------------


def policy(mode: str, body: dict[str, Any]) -> Turn:
    task = next(t for t in TASKS if t["question"] == user_text(body))
    return Turn(text=f"Let me think.\n<answer>{task['answer'] if mode == 'correct' else WRONG}</answer>")


@pytest.mark.slow
def test_end_to_end_right_and_wrong_policies(tmp_path):
    with environment_stack("reasoning_gym", policy, tmp_path) as stack:
        right, stdout = stack.collect("correct")
        wrong, _ = stack.collect("wrong")
    assert [row["reward"] for row in right] == [1.0] * 5
    assert "mean/reward 1.0000" in stdout
    assert all(row["reward"] < 1.0 for row in wrong)
    assert {row["dataset_name"] for row in right} == {t["dataset_name"] for t in TASKS} and len(TASKS) == 5
