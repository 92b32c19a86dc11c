"""Writing an environment, as a new user does it: scaffold -> ng_test -> collect 5 rollouts -> ng_test passes.

The steps run as real commands in a scratch project (a folder with `resources_servers/` and links to
the library, agents and models), against a scripted upstream that plays the model. The fixture
`authored_environment` leaves the scaffolded environment and its 5 collected rows behind, for
tests that look at them (the viewer, re-verify) to build on.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from nemo_gym.scaffold import collect_example_rollouts_command
from nemo_gym.scaffold.resources_server import LOCAL_MODEL_CONFIG
from nemo_gym.testing import ScriptedOpenAI, Turn, free_port
from tests.conftest import PROJECT_ROOT, child_env, cli

pytestmark = pytest.mark.slow
OPENAI_MODEL_CONFIG = "responses_api_models/openai_model/configs/openai_model.yaml"
ENV_NAME = "word_len"


def python_module(module: str, *args: str, cwd: Path, timeout: float = 180):
    """Run a command by module, so it works before the console script is installed (pip install -e)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=child_env()
    )


def measure_then_answer(body: dict) -> Turn:
    """A model that does the scaffolded task right: measure the quoted word with the tool, then say the number."""
    items = body.get("input") or []
    results = [item for item in items if item.get("type") == "function_call_output"]
    if results:
        return Turn(text=f"The answer is {json.loads(results[-1]['output'])['length']}.")
    question = next(item["content"] for item in reversed(items) if item.get("role") == "user")
    word = re.search(r"'([^']+)'", question).group(1)
    return Turn(tool_calls=[("get_word_length", json.dumps({"word": word}))])


def scratch_project(root: Path) -> Path:
    """A project folder of our own: new environments land here, never in the repository."""
    (root / "resources_servers").mkdir(parents=True)
    for shared in ("nemo_gym", "responses_api_agents", "responses_api_models"):
        (root / shared).symlink_to(PROJECT_ROOT / shared)
    return root


@dataclass
class AuthoredEnvironment:
    project: Path
    name: str
    folder: Path
    rollouts: Path  # 5 collected rows of the scaffolded environment
    collect_stderr: str


def collect(project: Path, name: str, output: Path, upstream_url: str, *extra: str):
    folder = f"resources_servers/{name}"
    return cli(
        "ng_collect_rollouts",
        f"+config_paths=[{folder}/configs/{name}.yaml,{OPENAI_MODEL_CONFIG}]",
        f"+agent_name={name}_simple_agent",
        f"+input_jsonl_fpath={folder}/data/example.jsonl",
        f"+output_jsonl_fpath={output}",
        f"+policy_base_url={upstream_url}",
        "+policy_api_key=sk-test",
        "+policy_model_name=scripted-model",
        f"+head_server.port={free_port()}",
        *extra,
        cwd=project,
        timeout=180,
    )


@pytest.fixture(scope="module")
def authored_environment(tmp_path_factory) -> AuthoredEnvironment:
    """Scaffold `word_len`, check it with ng_test, and collect its 5 example tasks once each (once per
    module: tests that use it may rewrite data/example_rollouts.jsonl, and each writes it before checking)."""
    tmp_path = tmp_path_factory.mktemp("authoring")
    project = scratch_project(tmp_path / "project")
    created = python_module(
        "nemo_gym.cli.init_resources_server", f"+entrypoint=resources_servers/{ENV_NAME}", cwd=project
    )
    assert created.returncode == 0, created.stderr
    folder = project / "resources_servers" / ENV_NAME
    assert collect_example_rollouts_command(ENV_NAME) in created.stdout

    # Straight after the scaffold: the tests pass, and only the example rollouts are missing,
    # with the command that collects them.
    checked = python_module("nemo_gym.cli.env_test", f"+entrypoint=resources_servers/{ENV_NAME}", cwd=project)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert "4 passed" in checked.stdout
    data_lines = [line for line in checked.stderr.splitlines() if line.startswith("ng_test: data:")]
    assert len(data_lines) == 1 and "example_rollouts.jsonl: missing" in data_lines[0]
    assert collect_example_rollouts_command(ENV_NAME) in checked.stderr

    # Run the printed command as a user pastes it into a shell, with one change: the scripted
    # upstream (through openai_model) plays the model instead of the local CPU model.
    command = collect_example_rollouts_command(ENV_NAME).replace(LOCAL_MODEL_CONFIG, OPENAI_MODEL_CONFIG)
    with ScriptedOpenAI(measure_then_answer) as upstream:
        scripted = (
            f" +policy_base_url={upstream.url} +policy_api_key=sk-test +policy_model_name=scripted-model"
            f" +head_server.port={free_port()} && cp"
        )
        result = subprocess.run(
            ["bash", "-c", command.replace(" && cp", scripted)],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=180,
            env=child_env(),
        )
    assert result.returncode == 0, result.stderr
    rollouts = project / "results" / f"{ENV_NAME}_example_rollouts.jsonl"
    assert (folder / "data" / "example_rollouts.jsonl").read_text() == rollouts.read_text()
    return AuthoredEnvironment(project, ENV_NAME, folder, rollouts, result.stderr)


def test_scaffold_check_collect_then_check_again(authored_environment):
    env = authored_environment
    rows = [json.loads(line) for line in env.rollouts.read_text().splitlines()]
    assert len(rows) == 5
    assert sorted(row["_ng_task_index"] for row in rows) == [0, 1, 2, 3, 4]
    # The tool ran on the model's arguments and verify scored the task field: every answer is right.
    assert [row["reward"] for row in rows] == [1.0] * 5
    assert {row["extracted_answer"] == row["expected_answer"] for row in rows} == {True}
    assert all(item["type"] == "function_call" for row in rows for item in row["response"]["output"][:1])

    # The quality report is written beside the rows (not in the environment's folder) and summarised.
    quality = json.loads(env.rollouts.with_name(f"{env.name}_example_rollouts_quality.json").read_text())
    assert quality["num_rows"] == 5 and quality["tool_error_rate"] == 0.0
    assert "Quality:" in env.collect_stderr

    assert sorted(path.name for path in (env.folder / "data").iterdir()) == ["example.jsonl", "example_rollouts.jsonl"]

    # The command copied those rows into the environment as its example rollouts: ng_test passes outright.
    (env.folder / "data" / "example_rollouts.jsonl").write_text(env.rollouts.read_text())
    checked = python_module("nemo_gym.cli.env_test", f"+entrypoint=resources_servers/{env.name}", cwd=env.project)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "data ok" in checked.stdout


def test_example_rollouts_copied_from_another_environment_fail_with_a_clear_line(authored_environment):
    env = authored_environment
    copied = PROJECT_ROOT / "resources_servers" / "example_single_tool_call" / "data" / "example_rollouts.jsonl"
    (env.folder / "data" / "example_rollouts.jsonl").write_text(copied.read_text())
    checked = python_module("nemo_gym.cli.env_test", f"+entrypoint=resources_servers/{env.name}", cwd=env.project)
    assert checked.returncode == 2
    assert "was the file copied from another environment?" in checked.stderr
    assert collect_example_rollouts_command(env.name) in checked.stderr


def test_a_dead_upstream_is_named_on_the_console(tmp_path):
    project = scratch_project(tmp_path / "project")
    assert (
        python_module(
            "nemo_gym.cli.init_resources_server", f"+entrypoint=resources_servers/{ENV_NAME}", cwd=project
        ).returncode
        == 0
    )
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    output = tmp_path / "dead.jsonl"
    result = collect(project, ENV_NAME, output, dead, "+max_attempts=1")
    assert result.returncode == 1
    # Not just "0 tasks": the console names the refused connection, three JSON levels down in the failures file.
    assert re.search(
        r"failed: 5 x ServerUnreachableError \(HTTP 502\): cannot connect to " + re.escape(dead), result.stderr
    ), result.stderr
    assert "is the model (or its upstream, policy_base_url) running?" in result.stderr
    report = json.loads(output.with_name("dead_quality.json").read_text())
    assert report["failures_by_type"][0]["error_type"] == "ServerUnreachableError"
