"""A NeMo Gym-style environment folder of our own (envs/capital_quiz: NeMo Gym's import paths, typed
items, `output_text`, a judge called through `call_judge`, `ReverifyMode`, reward_profile metrics,
`requirements.txt`, tests that import it from `resources_servers/`) runs here end to end, with no
NeMo Gym code: copied unchanged into a project's `resources_servers/`, it starts with `ng_run`, its
rollouts are collected with `ng_collect_rollouts` (one scripted upstream on loopback plays both the
policy and the judge), its hooks write `<stem>_aggregate_metrics.json`, `ng_test` runs its own tests
from the folder, and `ng_reverify` gives back every stored reward by asking the judge again.

The first test is the fast part (the server in this process, the judge over HTTP); the rest start
the real commands once (`quiz_project`) and are slow.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from nemo_gym.server_utils import ServerClient
from nemo_gym.testing import NgRunProcess, ScriptedOpenAI, ThreadedServer, Turn, free_port, registry_client
from tests.conftest import cli
from tests.e2e.conftest import OPENAI_MODEL_CONFIG, python_module, scratch_project

ENV = "capital_quiz"
FOLDER = Path(__file__).parent / "envs" / ENV

# What the scripted policy answers per country, and what that should score: Paris and Rome are named
# (no judge), "Edo" is judged the same city as Tokyo, Sydney and Toronto are judged wrong.
ANSWERS = {
    "France": "The capital is Paris.",
    "Japan": "Edo",
    "Australia": "Sydney",
    "Italy": "Rome.",
    "Canada": "Toronto",
}
REWARDS = [1.0, 1.0, 0.0, 1.0, 0.0]  # in task order: France, Japan, Australia, Italy, Canada
JUDGED = {1, 2, 4}


def last_user_text(body: dict[str, Any]) -> str:
    return [item["content"] for item in body["input"] if item.get("role") == "user"][-1]


def is_judge_call(body: dict[str, Any]) -> bool:
    return last_user_text(body).startswith("Question:")


def policy_and_judge(body: dict[str, Any]) -> Turn:
    text = last_user_text(body)
    if is_judge_call(body):
        return Turn(text="[[A=B]]" if "Candidate answer: Edo" in text else "[[A!=B]]")
    return Turn(text=ANSWERS[re.search(r"capital of (\w+)", text).group(1)])


def tasks() -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FOLDER / "data" / "example.jsonl").read_text().splitlines()]


def load_app():
    spec = importlib.util.spec_from_file_location(f"{ENV}_app", FOLDER / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_folder_verifies_with_its_judge_over_http_and_its_hooks_answer() -> None:
    app = load_app()
    with ScriptedOpenAI(policy_and_judge) as upstream:
        config = app.CapitalQuizConfig(
            name=ENV,
            judge_model_server={"type": "responses_api_models", "name": "policy_model"},
            judge_responses_create_params={"input": [], "temperature": 0.0},
        )
        judge = registry_client({"policy_model": ("responses_api_models", upstream.url.removesuffix("/v1"))})
        server = app.CapitalQuizServer(config=config, server_client=ServerClient.from_client(judge))
        with ThreadedServer.of(server) as running, httpx.Client(base_url=running.url) as client:
            rows = []
            for index, task in enumerate(tasks()):
                country = re.search(r"capital of (\w+)", task["question"]).group(1)
                message = {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": ANSWERS[country]}],
                }
                answer = client.post("/verify", json=task | {"response": {"id": "r", "output": [message]}})
                assert answer.status_code == 200, answer.text
                rows.append(answer.json() | {"_ng_task_index": index, "_ng_rollout_index": 0})
            metrics = client.post("/aggregate_metrics", json={"verify_responses": rows}).json()
            mode = client.get("/reverify_mode").json()
    assert [row["reward"] for row in rows] == REWARDS
    assert [row["judge_verdict"] for row in rows] == [None, "[[A=B]]", "[[A!=B]]", None, "[[A!=B]]"]
    assert len([body for body in upstream.requests if is_judge_call(body)]) == len(JUDGED)
    assert metrics["key_metrics"] == {"pass@1[avg-of-1]/accuracy": 60.0, "mean/reward": 0.6}
    assert metrics["agent_metrics"]["europe/pass@1/accuracy"] == 100.0
    assert metrics["agent_metrics"]["oceania/pass@1/accuracy"] == 0.0
    assert mode == "stateless"


@dataclass
class QuizProject:
    project: Path
    output: Path
    collected: Any  # ng_collect_rollouts' CompletedProcess
    reverified: Any  # ng_reverify's
    checked: Any  # ng_test's
    policy_calls: int
    judge_calls_collecting: int
    judge_calls_reverifying: int
    policy_calls_reverifying: int


@pytest.fixture(scope="module")
def quiz_project(tmp_path_factory) -> QuizProject:
    """The folder copied unchanged into a scratch project, run once with the real commands."""
    root = tmp_path_factory.mktemp("nemo_gym_style")
    project = scratch_project(root / "project")
    shutil.copytree(FOLDER, project / "resources_servers" / ENV)
    output = root / "results" / "quiz.jsonl"
    head_port = free_port()
    configs = [f"resources_servers/{ENV}/configs/{ENV}.yaml", OPENAI_MODEL_CONFIG]
    with ScriptedOpenAI(policy_and_judge) as upstream:
        policy = (f"+policy_base_url={upstream.url}", "+policy_api_key=sk-test", "+policy_model_name=scripted-model")
        stack = NgRunProcess(configs, f"+head_server.port={head_port}", *policy, cwd=project)
        try:
            stack.wait_ready(timeout=180)
            collected = cli(
                "ng_collect_rollouts",
                f"+agent_name={ENV}_simple_agent",
                f"+input_jsonl_fpath=resources_servers/{ENV}/data/example.jsonl",
                f"+output_jsonl_fpath={output}",
                "+num_repeats=2",
                f"+head_server.port={head_port}",
                cwd=project,
                timeout=180,
            )
            assert collected.returncode == 0, collected.stdout + collected.stderr
            judged = [is_judge_call(body) for body in upstream.requests]
            reverified = cli(
                "ng_reverify",
                f"+input_jsonl_fpath={output}",
                f"+output_jsonl_fpath={root / 'results' / 'reverified.jsonl'}",
                f"+head_server.port={head_port}",
                cwd=project,
                timeout=180,
            )
            again = [is_judge_call(body) for body in upstream.requests[len(judged) :]]
        finally:
            stack.stop()
    # Its collected rows (first rollout of each task) become its example rollouts, as the scaffold's command does.
    first = [line for line in output.read_text().splitlines() if json.loads(line)["_ng_rollout_index"] == 0]
    (project / "resources_servers" / ENV / "data" / "example_rollouts.jsonl").write_text("\n".join(first) + "\n")
    checked = python_module("nemo_gym.cli.env_test", f"+entrypoint=resources_servers/{ENV}", cwd=project)
    return QuizProject(
        project,
        output,
        collected,
        reverified,
        checked,
        policy_calls=judged.count(False),
        judge_calls_collecting=judged.count(True),
        judge_calls_reverifying=again.count(True),
        policy_calls_reverifying=again.count(False),
    )


def rows_of(path: Path) -> list[dict[str, Any]]:
    return sorted(
        (json.loads(line) for line in path.read_text().splitlines()),
        key=lambda row: (row["_ng_task_index"], row["_ng_rollout_index"]),
    )


@pytest.mark.slow
def test_ng_run_and_ng_collect_rollouts_score_the_folder_with_its_judge(quiz_project: QuizProject) -> None:
    rows = rows_of(quiz_project.output)
    assert [(row["_ng_task_index"], row["_ng_rollout_index"]) for row in rows] == [
        (t, r) for t in range(5) for r in range(2)
    ]
    assert [row["reward"] for row in rows] == [reward for reward in REWARDS for _ in range(2)]
    assert rows[2]["judge_verdict"] == "[[A=B]]" and rows[2]["extracted_answer"] == "Edo"
    assert rows[0]["judge_verdict"] is None and rows[0]["region"] == "europe"
    assert rows[0]["response"]["output"][0]["content"][0]["text"] == "The capital is Paris."
    assert quiz_project.policy_calls == 10 and quiz_project.judge_calls_collecting == 2 * len(JUDGED)


@pytest.mark.slow
def test_the_environment_hooks_write_the_aggregate_metrics_file(quiz_project: QuizProject) -> None:
    path = quiz_project.output.with_name("quiz_aggregate_metrics.json")
    [entry] = json.loads(path.read_text())
    assert entry["agent_ref"] == {"name": f"{ENV}_simple_agent"}
    # get_key_metrics chose the headline; compute_metrics added pass@k and the per-region figures.
    assert entry["key_metrics"] == {"pass@1[avg-of-2]/accuracy": 60.0, "mean/reward": 0.6}
    agent = entry["agent_metrics"]
    assert agent["pass@2/accuracy"] == 60.0 and agent["europe/pass@2/accuracy"] == 100.0
    assert agent["asia/pass@2/accuracy"] == 100.0 and agent["americas/pass@2/accuracy"] == 0.0
    assert [group["_ng_task_index"] for group in entry["group_level_metrics"]] == list(range(5))
    assert "pass@1[avg-of-2]/accuracy 60" in quiz_project.collected.stdout + quiz_project.collected.stderr


@pytest.mark.slow
def test_ng_test_runs_the_folders_own_tests_from_the_folder(quiz_project: QuizProject) -> None:
    checked = quiz_project.checked
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "4 passed" in checked.stdout and "data ok" in checked.stdout


@pytest.mark.slow
def test_ng_reverify_asks_the_judge_again_and_gives_back_every_reward(quiz_project: QuizProject) -> None:
    reverified = quiz_project.reverified
    assert reverified.returncode == 0, reverified.stdout + reverified.stderr
    assert reverified.stdout.splitlines()[0] == "Re-verified 10 of 10 rows: 0 rewards changed."
    # The judge was asked again for every judged row; the policy never.
    assert quiz_project.judge_calls_reverifying == 2 * len(JUDGED) and quiz_project.policy_calls_reverifying == 0
    again = rows_of(quiz_project.output.with_name("reverified.jsonl"))
    assert [row["judge_verdict"] for row in again] == [row["judge_verdict"] for row in rows_of(quiz_project.output)]
