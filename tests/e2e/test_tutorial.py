"""The rollout-collection tutorial, exactly as a NeMo Gym user types it, against a scripted upstream."""

from __future__ import annotations

import json
import signal
import time

import httpx
import psutil
import pytest

from nemo_gym.testing.ng_run_process import NgRunProcess
from tests.conftest import TUTORIAL_AGENT, TUTORIAL_CONFIGS, TUTORIAL_DATA, child_env, cli

pytestmark = pytest.mark.slow
SECRET = "sk-test-secret-never-shown"


def RunningStack(*overrides: str) -> NgRunProcess:
    """The tutorial's `ng_run` (example_single_tool_call + openai_model) as a real subprocess."""
    return NgRunProcess(TUTORIAL_CONFIGS, *overrides)


def test_tutorial_collects_ten_scored_rollouts_and_leaves_no_process(upstream, head_port, tmp_path):
    stack = RunningStack(
        f"+head_server.port={head_port}",
        f"+policy_base_url={upstream.url}",
        f"+policy_api_key={SECRET}",
        "+policy_model_name=scripted-model",
    )
    try:
        stack.wait_ready()
        for name in ("head_server", "example_single_tool_call", TUTORIAL_AGENT, "policy_model"):
            assert name in stack.output
        children = psutil.Process(stack.process.pid).children(recursive=True)
        assert len(children) >= 3

        # The head server lists the servers and never a config value.
        head = f"http://127.0.0.1:{head_port}"
        registry = httpx.get(f"{head}/server_instances").json()
        assert {row["name"] for row in registry} == {"example_single_tool_call", TUTORIAL_AGENT, "policy_model"}
        for path in ("/", "/health", "/server_instances", "/global_config_dict_yaml"):
            assert SECRET not in httpx.get(f"{head}{path}").text
        # ...nor is the key on any process's command line.
        for child in children:
            assert SECRET not in " ".join(child.cmdline())

        output = tmp_path / "example_single_tool_call_rollouts.jsonl"
        result = cli(
            "ng_collect_rollouts",
            f"+agent_name={TUTORIAL_AGENT}",
            f"+input_jsonl_fpath={TUTORIAL_DATA}",
            f"+output_jsonl_fpath={output}",
            "+limit=5",
            "+num_repeats=2",
            "+num_samples_in_parallel=3",
            "+responses_create_params.temperature=0.0",
            f"+head_server.port={head_port}",
        )
        assert result.returncode == 0, result.stderr
        assert "Collecting rollouts: 100%" in result.stderr and "10/10" in result.stderr
        assert "mean/reward 1.0000" in result.stdout

        rows = [json.loads(line) for line in output.read_text().splitlines()]
        assert len(rows) == 10
        assert sorted((row["_ng_task_index"], row["_ng_rollout_index"]) for row in rows) == [
            (task, rollout) for task in range(5) for rollout in range(2)
        ]
        for row in rows:
            assert row["reward"] == 1.0
            assert row["responses_create_params"]["temperature"] == 0.0
            output_items = row["response"]["output"]
            calls = [item for item in output_items if item["type"] == "function_call"]
            results = [item for item in output_items if item["type"] == "function_call_output"]
            assert [call["name"] for call in calls] == ["get_weather"]
            assert results[0]["call_id"] == calls[0]["call_id"]
            assert "The weather in San Francisco is cold." in results[0]["output"]
            assert output_items[-1]["type"] == "message" and output_items[-1]["role"] == "assistant"
            # usage is summed over the two model calls of the episode (the scripted model reports 120 each)
            assert row["response"]["usage"]["total_tokens"] == 240
        # The upstream saw the configured model and key, and the temperature override.
        assert all(
            request["model"] == "scripted-model" and request["temperature"] == 0.0 for request in upstream.requests
        )
        metrics = json.loads((tmp_path / "example_single_tool_call_rollouts_metrics.json").read_text())
        assert metrics["counts"]["rollouts"] == 10 and metrics["fields"]["reward"]["mean"] == 1.0
        # The environment's own metrics (its /aggregate_metrics, through the agent), in NeMo Gym's file.
        [environment] = json.loads((tmp_path / "example_single_tool_call_rollouts_aggregate_metrics.json").read_text())
        assert environment["agent_ref"] == {"name": TUTORIAL_AGENT} and environment["key_metrics"]["mean/reward"] == 1.0
        assert len(environment["group_level_metrics"]) == 5
        assert f"Key metrics for {TUTORIAL_AGENT}: " in result.stdout and "mean/reward 1 " in result.stdout
    finally:
        stack.process.send_signal(signal.SIGINT)
        stack.process.wait(timeout=15)

    time.sleep(0.2)
    alive = [child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"processes left behind: {alive}"
    assert stack.process.returncode == 0


def test_ng_run_reports_a_server_that_dies_during_startup(head_port, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "broken_env:\n  resources_servers:\n    example_single_tool_call:\n      entrypoint: does_not_exist.py\n"
        "      domain: agent\n"
    )
    result = cli("ng_run", f"+config_paths=[{broken}]", f"+head_server.port={head_port}", timeout=60)
    assert result.returncode == 2
    assert "does_not_exist.py" in result.stderr and "does not exist" in result.stderr


def test_ng_run_shows_the_last_output_of_a_server_that_crashes_at_startup(head_port, tmp_path):
    # A valid config (config mistakes are one-line errors, exit 2); the crash comes from uvicorn
    # rejecting a log level the server passes through from the environment.
    config = tmp_path / "model.yaml"
    config.write_text(
        "policy_model:\n  responses_api_models:\n    openai_model:\n      entrypoint: app.py\n"
        "      openai_base_url: http://127.0.0.1:9/v1\n      openai_model: m\n"
    )
    started = time.monotonic()
    result = cli(
        "ng_run",
        f"+config_paths=[{config}]",
        f"+head_server.port={head_port}",
        timeout=60,
        env=child_env() | {"NEMO_GYM_LOG_LEVEL": "no_such_level"},
    )
    assert result.returncode == 1
    assert "server 'policy_model' exited" in result.stderr
    assert "KeyError: 'no_such_level'" in result.stderr  # the child's own traceback tail
    assert time.monotonic() - started < 30


def test_ng_run_stops_everything_when_a_server_dies_later(upstream, head_port):
    stack = RunningStack(
        f"+head_server.port={head_port}",
        f"+policy_base_url={upstream.url}",
        "+policy_api_key=x",
        "+policy_model_name=m",
    )
    try:
        stack.wait_ready()
        children = psutil.Process(stack.process.pid).children(recursive=True)
        victim = next(child for child in children if "openai_model" in " ".join(child.cmdline()))
        victim.kill()
        stack.process.wait(timeout=20)
    finally:
        if stack.process.poll() is None:
            stack.process.kill()
    assert stack.process.returncode == 1
    assert "server 'policy_model' exited" in stack.output
    time.sleep(0.2)
    assert [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE] == []


def test_sigterm_stops_ng_run_and_every_server(upstream, head_port):
    stack = RunningStack(
        f"+head_server.port={head_port}",
        f"+policy_base_url={upstream.url}",
        "+policy_api_key=x",
        "+policy_model_name=m",
    )
    stack.wait_ready()
    children = psutil.Process(stack.process.pid).children(recursive=True)
    started = time.monotonic()
    stack.process.send_signal(signal.SIGTERM)
    assert stack.process.wait(timeout=15) == 0
    assert time.monotonic() - started < 10
    time.sleep(0.2)
    assert [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE] == []


def test_two_stacks_run_side_by_side_on_different_head_ports(upstream, tmp_path):
    from nemo_gym.testing.inprocess import free_port

    ports = [free_port(), free_port()]
    stacks = [
        RunningStack(
            f"+head_server.port={port}", f"+policy_base_url={upstream.url}", "+policy_api_key=x", "+policy_model_name=m"
        )
        for port in ports
    ]
    try:
        for stack in stacks:
            stack.wait_ready()
        urls = [{row["url"] for row in httpx.get(f"http://127.0.0.1:{port}/server_instances").json()} for port in ports]
        assert not urls[0] & urls[1]  # every server of each stack has its own port
        for port in ports:
            output = tmp_path / f"out_{port}.jsonl"
            result = cli(
                "ng_collect_rollouts",
                f"+agent_name={TUTORIAL_AGENT}",
                f"+input_jsonl_fpath={TUTORIAL_DATA}",
                f"+output_jsonl_fpath={output}",
                "+limit=2",
                f"+head_server.port={port}",
            )
            assert result.returncode == 0, result.stderr
            assert len(output.read_text().splitlines()) == 2
    finally:
        for stack in stacks:
            stack.stop()
