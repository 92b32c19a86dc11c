"""Shared by the end-to-end tests: a scaffolded environment with 5 collected rollouts (`authored_environment`).

`authored_environment` runs what a new user does, as real commands in a scratch project (a folder
with `resources_servers/` and links to the library, agents and models): `ng_init_resources_server`,
`ng_test` (tests pass, only the example rollouts missing), then the collection command `ng_test`
prints, against a scripted model. Tests that look at rollouts (a viewer, re-verify) can take it
as an argument and use `.rollouts` (5 rows) and `.project` (cwd for commands).
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
    assert "6 passed" in checked.stdout
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
