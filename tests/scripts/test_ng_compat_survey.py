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
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
import yaml

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


def rollout(expected: str, said: str, reward: float) -> str:
    row = {
        "responses_create_params": {"input": [{"role": "user", "content": "What is 2 + 2?"}]},
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

    table = result.stdout
    assert "survey_good" in table and "survey_wrong" in table and "surely-not-installed-pkg-17" in table
    assert "offline    3 envs: import 3, tests pass 2, start 2" in table
    assert "tests pass AND >=95% match 1" in table
    assert "rows: 8 of 10 verified, 5 with the stored reward" in table
    assert "judge envs that start and verify every row against the scripted judge: 2 of 2" in table
    # Nothing is left behind: no temporary project and no server (the survey stops each ng_run's group).
    assert not list(Path(tempfile.gettempdir()).glob("ng_survey_survey_*"))


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
