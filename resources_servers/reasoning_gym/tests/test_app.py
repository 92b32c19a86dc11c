"""reasoning_gym: rows from many generators scored by the package's own scorers, wrong, malformed and
empty answers, the data command, and end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from nemo_gym.testing.inprocess import ThreadedServer, registry_client
from nemo_gym.testing.scripted_openai import Turn
from resources_servers.reasoning_gym.app import ReasoningGymConfig, ReasoningGymServer
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


def server(**config: Any) -> ReasoningGymServer:
    return ReasoningGymServer(
        config=ReasoningGymConfig(name="rg", domain="math", **config), server_client=registry_client({})
    )


@pytest.fixture(scope="module")
def rg() -> Iterator[str]:
    """One server (its sandboxed scorers warm) for the module's tests: its URL."""
    with ThreadedServer.of(server(scoring_timeout_s=5.0)) as http:
        yield http.url


def reply(text: str) -> list[dict[str, Any]]:
    return [
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}
    ]


def verify(url: str, row: dict[str, Any], output: list[dict[str, Any]]) -> dict[str, Any]:
    answer = httpx.post(f"{url}/verify", json=row | {"response": {"id": "r", "output": output}}, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_more_than_a_hundred_generators_are_available():
    assert len(generator_names()) > 100


def test_reference_answers_score_one_and_wrong_answers_less_for_every_listed_generator(rg):
    assert len(set(GENERATORS)) >= 20
    for name in GENERATORS:
        [row] = list(task_rows(name, size=1, seed=11))
        json.loads(json.dumps(row))  # a row survives JSONL as is
        right = verify(rg, row, reply(f"Thinking...\n<answer>{row['answer']}</answer>"))
        assert right["reward"] == 1.0, (name, row["answer"], right["extracted_answer"], right["scoring_error"])
        wrong = verify(rg, row, reply(f"<answer>{WRONG}</answer>"))
        assert wrong["reward"] < 1.0, name


def test_difficulty_config_reaches_the_generator_and_the_scorer(rg):
    rows = list(
        task_rows(
            "basic_arithmetic",
            size=3,
            seed=1,
            config={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
        )
    )
    assert all(row["metadata"]["num_terms"] == 2 and row["dataset_config"]["max_terms"] == 2 for row in rows)
    assert verify(rg, rows[0], reply(f"<answer>{rows[0]['answer']}</answer>"))["reward"] == 1.0


@pytest.mark.parametrize("index", range(5))
def test_example_rows_right_wrong_malformed_and_empty(rg, index):
    row = TASKS[index]
    assert verify(rg, row, reply(f"<answer>{row['answer']}</answer>"))["reward"] == 1.0
    assert verify(rg, row, reply(f"<answer>{WRONG}</answer>"))["reward"] < 1.0
    untagged = verify(rg, row, reply(f"The answer is {row['answer']}"))  # read whole, as NeMo Gym does
    assert untagged["extracted_answer"] == f"The answer is {row['answer']}"
    for output in ([], reply(""), reply("<answer></answer>")):
        assert verify(rg, row, output)["reward"] == 0.0


# A row as NeMo Gym writes it, made by hand: the generator named only in metadata.source_dataset.
NEMO_GYM_KNIGHTS_KNAVES = {
    "responses_create_params": {
        "input": [{"role": "user", "content": "Ada says 'Ben is a fool'. Ben says 'Ada is a fool'. Who is who?"}]
    },
    "question": "Ada says 'Ben is a fool'. Ben says 'Ada is a fool'. Who is who?",
    "answer": "Ada is a sage, and Ben is a fool.",
    "metadata": {
        "source_dataset": "knights_knaves",
        "source_index": 3,
        "statements": [["not", ["telling-truth", 1]], ["not", ["telling-truth", 0]]],
        "solution": [True, False],
        "names": ["Ada", "Ben"],
        "knight_knave_terms": {
            "knight": "sage",
            "knave": "fool",
            "a_knight": "a sage",
            "a_knave": "a fool",
            "Knight": "Sage",
            "Knave": "Fool",
        },
        "difficulty": {"n_people": 2, "depth_constraint": 2, "width_constraint": 2},
    },
}


@pytest.mark.parametrize(
    ("text", "extracted"),
    [
        ("Ada tells the truth, so \\boxed{Ada is a sage, and Ben is a fool}", "Ada is a sage, and Ben is a fool"),
        ("Ada is a sage, and Ben is a fool.", "Ada is a sage, and Ben is a fool."),
        ("Working... <answer>Ada is a sage, and Ben is a fool</answer>", "Ada is a sage, and Ben is a fool"),
    ],
)
def test_a_nemo_gym_row_names_its_generator_in_metadata_and_untagged_answers_count(rg, text, extracted):
    result = verify(rg, NEMO_GYM_KNIGHTS_KNAVES, reply(text))
    assert (result["reward"], result["extracted_answer"]) == (1.0, extracted)


def test_answer_fallbacks_can_be_switched_off(rg):
    strict = server(answer_fallbacks=False)
    assert strict.read_answer("\\boxed{Ada is a fool}") is None
    assert strict.read_answer("<answer>x</answer>") == "x"
    assert server().read_answer("a \\boxed{b} and \\boxed{c}") == "b"


def test_a_row_that_names_no_generator_is_a_400(rg):
    row = NEMO_GYM_KNIGHTS_KNAVES | {"metadata": {"names": ["Ada", "Ben"]}}
    answer = httpx.post(f"{rg}/verify", json=row | {"response": {"id": "r", "output": reply("x")}}, timeout=60)
    assert answer.status_code == 400 and "metadata.source_dataset" in answer.text


def test_a_scorer_that_crashes_on_odd_output_scores_zero_with_the_reason(rg):
    [row] = list(task_rows("prime_factorization", size=1, seed=0))
    result = verify(rg, row, reply("<answer>two times three</answer>"))
    assert result["reward"] == 0.0 and "ValueError" in result["scoring_error"]


def test_unknown_generator_or_config_is_a_400_naming_it(rg):
    body = TASKS[0] | {"response": {"id": "r", "output": reply("<answer>1</answer>")}}
    unknown = httpx.post(f"{rg}/verify", json=body | {"dataset_name": "telepathy"}, timeout=60)
    assert unknown.status_code == 400 and "unknown reasoning-gym generator 'telepathy'" in unknown.text
    bad_config = httpx.post(f"{rg}/verify", json=body | {"dataset_config": {"max_terms": "many"}}, timeout=60)
    assert bad_config.status_code == 400 and "dataset_config for basic_arithmetic" in bad_config.text


# ---- hostile answers and task data (the package's scorers eval and parse_expr their input) ---------


def countdown_row() -> dict[str, Any]:
    [row] = list(task_rows("countdown", size=1, seed=3))
    return row


def injection(marker: Path) -> str:
    return f"__import__('os').system('id > {marker}; env >> {marker}; cat {PROJECT_ROOT}/pyproject.toml >> {marker}')"


def test_an_answer_that_is_code_runs_nowhere_near_the_server(rg, tmp_path):
    marker = tmp_path / "pwned.txt"
    result = verify(rg, countdown_row(), reply(f"<answer>{injection(marker)}</answer>"))
    assert not marker.exists()
    assert result["reward"] == 0.0
    assert result["scoring_error"] == "the scoring tried to run a shell command (os.system) and was stopped"
    # And from inside, the sandbox has nothing to take: no checkout, no secrets in its environment.
    probe = "__import__('os').path.exists('" + str(PROJECT_ROOT / "pyproject.toml") + "') or 1"
    assert verify(rg, countdown_row(), reply(f"<answer>{probe}</answer>"))["reward"] < 1.0


def test_task_metadata_is_data_not_code(rg, tmp_path):
    marker = tmp_path / "pwned.txt"
    [row] = list(task_rows("bitwise_arithmetic", size=1, seed=0))
    row["metadata"]["problem"] = f"__import__('os').system('id > {marker}') or 1"
    result = verify(rg, row, reply(f"<answer>{row['answer']}</answer>"))
    assert not marker.exists()
    assert result["reward"] == 0.0 and "run a shell command" in result["scoring_error"]


def test_a_scorer_past_its_limit_is_killed_and_the_server_stays_responsive(rg):
    row = countdown_row()
    slow = "7**(2*10**7)*7**(2*10**7)"  # sympy's parse_expr computes it: minutes of CPU in C code
    sleepy = "__import__('time').sleep(45) or 1"
    checks = 0
    with ThreadPoolExecutor(4) as pool:
        answers = [pool.submit(verify, rg, row, reply(f"<answer>{text}</answer>")) for text in (slow, sleepy, sleepy)]
        while not all(answer.done() for answer in answers):
            # The event loop never waits for a scorer (benchmarks/env_verify_latency.py measures how fast).
            assert httpx.get(f"{rg}/health", timeout=2).status_code == 200
            checks += 1
            time.sleep(0.05)
        results = [answer.result() for answer in answers]
    for result in results:
        assert result["reward"] == 0.0
        assert "5 s" in result["scoring_error"] and "killed" in result["scoring_error"], result["scoring_error"]
    assert checks > 10
    # Nothing is left running: a right answer right after scores 1.0.
    right = verify(rg, row, reply(f"<answer>{row['answer']}</answer>"))
    assert right["reward"] == 1.0, right["scoring_error"]


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


SECRET = "sk-planted-d0n0tl3ak-7f3a9c"


@pytest.mark.slow
def test_the_injection_through_ng_collect_rollouts_touches_nothing_and_leaks_nothing(tmp_path):
    """The attack as a policy would send it: collected with ng_collect_rollouts against a scripted
    upstream, on a stack whose policy key is a planted secret."""
    attacked, honest = list(task_rows("countdown", size=2, seed=21))
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps(attacked) + "\n" + json.dumps(honest) + "\n")
    marker = tmp_path / "pwned.txt"
    in_checkout = PROJECT_ROOT / "pwned.txt"
    attack = (
        f'<answer>__import__("os").system("id > pwned.txt; cat env.yaml >> pwned.txt; '
        f'id > {marker}; env >> {marker}")</answer>'
    )

    def policy(mode: str, body: dict[str, Any]) -> Turn:
        return Turn(text=attack if user_text(body) == attacked["question"] else f"<answer>{honest['answer']}</answer>")

    try:
        with environment_stack("reasoning_gym", policy, tmp_path, api_key=SECRET) as stack:
            rows, stdout = stack.collect("attack", input_path=tasks)
        assert not marker.exists() and not in_checkout.exists()
        assert rows[0]["reward"] == 0.0
        assert rows[0]["scoring_error"] == "the scoring tried to run a shell command (os.system) and was stopped"
        assert rows[1]["reward"] == 1.0 and rows[1]["scoring_error"] is None
        written = [path for path in tmp_path.rglob("*") if path.is_file()]
        assert written and not [path for path in written if SECRET in path.read_text(errors="replace")]
        assert SECRET not in stdout
    finally:
        in_checkout.unlink(missing_ok=True)  # never leave the attack's file behind, even on failure
