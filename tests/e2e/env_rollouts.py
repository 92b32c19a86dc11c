"""Run one environment end to end for its tests: `ng_run` (a real subprocess) against a scripted
upstream, then `ng_collect_rollouts` (the CLI) over the environment's example tasks.

One stack serves several collections: the script receives the name of the current *mode*
("correct", "wrong", ...), so a test can score a right and a wrong policy without a second start-up.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nemo_gym.testing.inprocess import free_port
from nemo_gym.testing.ng_run_process import NgRunProcess
from nemo_gym.testing.scripted_openai import ScriptedOpenAI, Turn
from tests.conftest import PROJECT_ROOT, cli

OPENAI_MODEL_CONFIG = "responses_api_models/openai_model/configs/openai_model.yaml"
ModeScript = Callable[[str, dict[str, Any]], Turn]


def example_tasks(env: str) -> list[dict[str, Any]]:
    path = PROJECT_ROOT / "resources_servers" / env / "data" / "example.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def user_text(body: dict[str, Any]) -> str:
    """The last user message of a Responses request (the task's question)."""
    return [item["content"] for item in body["input"] if item.get("role") == "user"][-1]


def items_of(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [item for item in body["input"] if item.get("type") == kind]


class EnvironmentStack:
    """A running `ng_run` for one environment; `collect(mode)` returns rows in task order."""

    def __init__(self, env: str, upstream: ScriptedOpenAI, holder: dict[str, str], head_port: int, tmp_path: Path):
        self.env, self.upstream, self.holder, self.head_port, self.tmp_path = env, upstream, holder, head_port, tmp_path

    def collect(self, mode: str, input_path: Path | None = None) -> tuple[list[dict[str, Any]], str]:
        self.holder["mode"] = mode
        source = input_path or PROJECT_ROOT / "resources_servers" / self.env / "data" / "example.jsonl"
        output = self.tmp_path / f"{self.env}_{mode}.jsonl"
        result = cli(
            "ng_collect_rollouts",
            f"+agent_name={self.env}_simple_agent",
            f"+input_jsonl_fpath={source}",
            f"+output_jsonl_fpath={output}",
            "+num_samples_in_parallel=5",
            f"+head_server.port={self.head_port}",
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        rows = sorted(
            (json.loads(line) for line in output.read_text().splitlines()), key=lambda row: row["_ng_task_index"]
        )
        return rows, result.stdout


@contextmanager
def environment_stack(
    env: str, script: ModeScript, tmp_path: Path, *overrides: str, api_key: str = "sk-test"
) -> Iterator[EnvironmentStack]:
    holder = {"mode": "correct"}
    head_port = free_port()
    with ScriptedOpenAI(lambda body: script(holder["mode"], body)) as upstream:
        stack = NgRunProcess(
            [f"resources_servers/{env}/configs/{env}.yaml", OPENAI_MODEL_CONFIG],
            f"+head_server.port={head_port}",
            f"+policy_base_url={upstream.url}",
            f"+policy_api_key={api_key}",
            "+policy_model_name=scripted-model",
            *overrides,
            cwd=PROJECT_ROOT,
        )
        try:
            stack.wait_ready()
            yield EnvironmentStack(env, upstream, holder, head_port, tmp_path)
        finally:
            stack.stop()
        assert stack.process.returncode == 0, stack.output
