"""Co-located collection (`ng_collect_rollouts +colocate=true`): the agent and resources servers run in
the collector's process and are called in memory; the rows, failures, deadlines and cancellations
are the same as over HTTP. Each test runs the real one-command CLI against a scripted upstream.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nemo_gym.testing.inprocess import free_port
from nemo_gym.testing.scripted_openai import ScriptedOpenAI, Turn
from tests.conftest import PROJECT_ROOT, cli
from tests.e2e.conftest import OPENAI_MODEL_CONFIG, scratch_project

# What differs between two runs of the same rollout whatever the transport: ids the upstream and the
# model server make up, clock readings and durations.
_VOLATILE = re.compile(rb'"(id|call_id|created_at|duration_s)":("(?:[^"\\]|\\.)*"|-?[0-9.eE+-]+|null)')


def _key(row: dict[str, Any]) -> tuple:
    return (row["agent_ref"]["name"], row["_ng_task_index"], row["_ng_rollout_index"])


def normalized_lines(path: Path) -> dict[tuple, bytes]:
    """Each output line, keyed by (agent, task, rollout), with ids and timings blanked, bytes otherwise as written."""
    lines = {}
    for raw in path.read_bytes().splitlines():
        if raw.strip():
            lines[_key(json.loads(raw))] = _VOLATILE.sub(rb'"\1":"~"', raw)
    return lines


def collect(
    configs: list[str], upstream_url: str, tasks: Path, output: Path, *extra: str, cwd: Path = PROJECT_ROOT
) -> subprocess.CompletedProcess[str]:
    return cli(
        "ng_collect_rollouts",
        f"+config_paths=[{','.join([*configs, OPENAI_MODEL_CONFIG])}]",
        f"+input_jsonl_fpath={tasks}",
        f"+output_jsonl_fpath={output}",
        f"+policy_base_url={upstream_url}",
        "+policy_api_key=sk-test",
        "+policy_model_name=scripted-model",
        f"+head_server.port={free_port()}",
        "+num_samples_in_parallel=8",
        *extra,
        cwd=cwd,
        timeout=280,
    )


def env_tasks(envs: list[str], tmp_path: Path) -> Path:
    """Every example task of `envs`, each routed to its environment's agent by `agent_ref`."""
    path = tmp_path / "tasks.jsonl"
    rows = []
    for env in envs:
        for line in (PROJECT_ROOT / f"resources_servers/{env}/data/example.jsonl").read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                row["agent_ref"] = {"type": "responses_api_agents", "name": f"{env}_simple_agent"}
                rows.append(row)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def assert_same_rows_both_ways(envs: list[str], tmp_path: Path, *colocated_extra: str) -> None:
    configs = [f"resources_servers/{env}/configs/{env}.yaml" for env in envs]
    tasks = env_tasks(envs, tmp_path)
    outputs = {}
    with ScriptedOpenAI() as upstream:
        for mode in ("false", "true"):
            output = tmp_path / f"colocate_{mode}.jsonl"
            extra = colocated_extra if mode == "true" else ()
            result = collect(configs, upstream.url, tasks, output, f"+colocate={mode}", *extra)
            outputs[mode] = output
            assert result.returncode in (0, 1), result.stdout + result.stderr
    http, colocated = normalized_lines(outputs["false"]), normalized_lines(outputs["true"])
    assert len(http) >= 5 * len(envs) - len(_failures(outputs["false"]))
    assert http.keys() == colocated.keys()
    for key in http:
        assert colocated[key] == http[key], key
    # A rollout that failed over HTTP fails the same way co-located.
    assert _failures(outputs["true"]) == _failures(outputs["false"])


def _failures(output: Path) -> dict[tuple, tuple]:
    path = output.with_name(output.stem + "_failures.jsonl")
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {_key(row): (row["error_type"], row["status_code"], row["attempts"]) for row in rows}


@pytest.mark.parametrize("env", ["example_single_tool_call", "example_stateful_counter"])
def test_colocated_rows_are_byte_for_byte_the_http_rows(env, tmp_path):
    # example_stateful_counter keeps per-rollout state keyed by the session cookie: a cookie lost or
    # mixed up in memory changes its rewards.
    assert_same_rows_both_ways([env], tmp_path)


@pytest.mark.slow
def test_two_colocated_workers_give_the_http_rows(tmp_path):
    assert_same_rows_both_ways(["example_stateful_counter"], tmp_path, "+colocate_workers=2")


ENVIRONMENTS = sorted(path.parent.parent.name for path in PROJECT_ROOT.glob("resources_servers/*/data/example.jsonl"))


@pytest.mark.slow
def test_every_environment_collects_the_same_rows_colocated_as_over_http(tmp_path):
    assert len(ENVIRONMENTS) >= 16
    assert_same_rows_both_ways(ENVIRONMENTS, tmp_path)


# ---- faults: a crash in environment code, a rollout deadline that cancels the work ----------------

FAULTY_APP = """
import asyncio
import os
from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel

from nemo_gym.servers.resources import (
    BaseResourcesServerConfig, BaseVerifyRequest, BaseVerifyResponse, SimpleResourcesServer,
)


class FaultyConfig(BaseResourcesServerConfig):
    marker_path: str = ""


class CityRequest(BaseModel):
    city: str


class FaultyServer(SimpleResourcesServer):
    config: FaultyConfig

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/get_weather")(self.get_weather)
        return app

    async def get_weather(self, body: CityRequest) -> dict:
        if body.city == "slow":
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                with open(self.config.marker_path, "a") as marker:
                    marker.write("cancelled\\n")
                raise
        return {"city": body.city, "weather": "cold"}

    async def verify(self, body: BaseVerifyRequest) -> BaseVerifyResponse:
        if (body.model_extra or {}).get("crash"):
            raise ZeroDivisionError("environment code crashed")
        return BaseVerifyResponse(**body.model_dump(), reward=1.0, served_by_pid=os.getpid())


if __name__ == "__main__":
    FaultyServer.run_webserver()
"""

FAULTY_CONFIG = """
faulty:
  resources_servers:
    faulty:
      entrypoint: app.py
      domain: other
faulty_simple_agent:
  responses_api_agents:
    simple_agent:
      entrypoint: app.py
      resources_server: {type: resources_servers, name: faulty}
      model_server: {type: responses_api_models, name: policy_model}
"""

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


def city_then_answer(body: dict[str, Any]) -> Turn:
    """Ask the tool about the city the task names (its user message), then answer."""
    if any(item.get("type") == "function_call_output" for item in body["input"]):
        return Turn(text="It is cold.")
    city = [item["content"] for item in body["input"] if item.get("role") == "user"][-1]
    return Turn(tool_calls=[("get_weather", json.dumps({"city": city}))])


@pytest.fixture
def faulty_project(tmp_path) -> Path:
    project = scratch_project(tmp_path / "project")
    folder = project / "resources_servers" / "faulty"
    (folder / "configs").mkdir(parents=True)
    (folder / "app.py").write_text(textwrap.dedent(FAULTY_APP))
    (folder / "configs" / "faulty.yaml").write_text(FAULTY_CONFIG)
    return project


def write_tasks(path: Path, rows: list[dict[str, Any]]) -> Path:
    tasks = [
        {"responses_create_params": {"input": [{"role": "user", "content": row.pop("city")}], "tools": TOOLS}} | row
        for row in rows
    ]
    path.write_text("".join(json.dumps(task) + "\n" for task in tasks))
    return path


def run_faulty(project: Path, script: Callable[[dict], Turn], tasks: Path, output: Path, *extra: str):
    with ScriptedOpenAI(script) as upstream:
        return collect(
            ["resources_servers/faulty/configs/faulty.yaml"],
            upstream.url,
            tasks,
            output,
            "+agent_name=faulty_simple_agent",
            *extra,
            cwd=project,
        )


def test_a_crash_in_environment_code_fails_that_rollout_only_as_over_http(faulty_project, tmp_path):
    tasks = write_tasks(
        tmp_path / "tasks.jsonl",
        [{"city": "Oslo"}, {"city": "Lima", "crash": True}, {"city": "Rome"}],
    )
    failures = {}
    for mode in ("false", "true"):
        output = tmp_path / f"out_{mode}.jsonl"
        result = run_faulty(faulty_project, city_then_answer, tasks, output, f"+colocate={mode}", "+max_attempts=2")
        assert result.returncode == 1, result.stdout + result.stderr  # the run ends normally, one rollout short
        if mode == "true":  # the server's log line, in the collector's stderr: one line, no traceback
            assert "(faulty) exception in POST /verify: ZeroDivisionError: environment code crashed" in result.stderr
            assert "Traceback" not in result.stderr
        rows = [json.loads(line) for line in output.read_text().splitlines()]
        assert sorted(row["_ng_task_index"] for row in rows) == [0, 2]
        assert all(row["reward"] == 1.0 for row in rows)
        failures[mode] = _failures(output)
    # The crash is answered 500 by the resources server, relayed as 502 by the agent, retried, then recorded.
    assert failures["true"] == failures["false"] == {("faulty_simple_agent", 1, 0): ("HTTPStatusError", 502, 2)}


def test_rollout_timeout_cancels_the_environment_work_colocated_as_over_http(faulty_project, tmp_path):
    tasks = write_tasks(tmp_path / "tasks.jsonl", [{"city": "slow"}, {"city": "slow"}, {"city": "Oslo"}])
    for mode in ("false", "true"):
        marker = tmp_path / f"cancelled_{mode}.txt"
        marker.touch()
        output = tmp_path / f"out_{mode}.jsonl"
        started = time.monotonic()
        result = run_faulty(
            faulty_project,
            city_then_answer,
            tasks,
            output,
            f"+colocate={mode}",
            "+max_attempts=1",
            "+rollout_timeout_s=2",
            f"+faulty.resources_servers.faulty.marker_path={marker}",
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert time.monotonic() - started < 50  # nowhere near the tool's 60 s
        rows = [json.loads(line) for line in output.read_text().splitlines()]
        # The two identical slow lines in a row are one task of two rollouts (NeMo Gym's folding of copies).
        assert [row["_ng_task_index"] for row in rows] == [1]
        assert _failures(output) == {
            ("faulty_simple_agent", 0, 0): ("TimeoutError", None, 1),
            ("faulty_simple_agent", 0, 1): ("TimeoutError", None, 1),
        }
        # The deadline reached the tool itself: both sleeping tool calls were cancelled.
        deadline = time.monotonic() + 10
        while marker.read_text().count("cancelled") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.read_text().count("cancelled") == 2, mode


def test_workers_share_the_rollouts_one_writer_writes_them_and_resume_finishes_the_job(faulty_project, tmp_path):
    cities = ["Oslo", "Lima", "Rome", "Kyiv", "Bern", "Riga", "Doha", "Baku"]
    tasks = write_tasks(tmp_path / "tasks.jsonl", [{"city": city} for city in cities])
    output = tmp_path / "out.jsonl"
    workers = ("+colocate=true", "+colocate_workers=2", "+num_repeats=2")
    first = run_faulty(faulty_project, city_then_answer, tasks, output, *workers)
    assert first.returncode == 0, first.stdout + first.stderr
    lines = output.read_text().splitlines(keepends=True)
    assert len(lines) == 16
    output.write_text("".join(lines[:6]))  # as if the run had been stopped after six rows
    again = run_faulty(faulty_project, city_then_answer, tasks, output, *workers, "+resume=true")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Resuming: 6 rollouts already" in again.stderr
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted((row["_ng_task_index"], row["_ng_rollout_index"]) for row in rows) == [
        (task, rollout) for task in range(8) for rollout in range(2)
    ]
    assert all(row["reward"] == 1.0 for row in rows)
    # Rollouts ran in two worker processes, neither of them the collector.
    assert len({row["served_by_pid"] for row in rows}) >= 2


def test_colocate_with_a_ray_cluster_is_one_line_and_exit_2(tmp_path):
    result = cli(
        "ng_collect_rollouts",
        "+config_paths=[resources_servers/example_single_tool_call/configs/example_single_tool_call.yaml,"
        f"{OPENAI_MODEL_CONFIG}]",
        "+agent_name=example_single_tool_call_simple_agent",
        "+input_jsonl_fpath=resources_servers/example_single_tool_call/data/example.jsonl",
        f"+output_jsonl_fpath={tmp_path / 'out.jsonl'}",
        "+colocate=true",
        "+ray_address=auto",
        "+policy_base_url=http://127.0.0.1:9/v1",
        "+policy_api_key=x",
        "+policy_model_name=m",
        f"+head_server.port={free_port()}",
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "+colocate=true" in result.stderr and "+ray_address" in result.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_colocate_workers_without_colocate_is_one_line_and_exit_2(tmp_path):
    result = cli(
        "ng_collect_rollouts",
        "+config_paths=[resources_servers/example_single_tool_call/configs/example_single_tool_call.yaml,"
        f"{OPENAI_MODEL_CONFIG}]",
        "+agent_name=example_single_tool_call_simple_agent",
        "+input_jsonl_fpath=resources_servers/example_single_tool_call/data/example.jsonl",
        f"+output_jsonl_fpath={tmp_path / 'out.jsonl'}",
        "+colocate_workers=2",
        "+policy_base_url=http://127.0.0.1:9/v1",
        "+policy_api_key=x",
        "+policy_model_name=m",
        f"+head_server.port={free_port()}",
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "ng_collect_rollouts: error: +colocate_workers needs +colocate=true (workers are co-located stacks)"
    )
