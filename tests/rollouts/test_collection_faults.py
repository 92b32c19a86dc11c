"""The collector under faults, with real processes: flaky and dead upstreams, kill -9 and resume,
bad input, and an output file that already exists."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from nemo_gym.testing.inprocess import free_port
from nemo_gym.testing.scripted_openai import ScriptedOpenAI
from tests.conftest import TUTORIAL_AGENT, TUTORIAL_CONFIGS, cli, spawn
from tests.e2e.test_tutorial import RunningStack

pytestmark = pytest.mark.slow


def write_tasks(path: Path, count: int) -> Path:
    row = json.loads(Path("resources_servers/example_single_tool_call/data/example.jsonl").read_text().splitlines()[0])
    # Distinct lines: identical consecutive lines would be one task (NeMo Gym's folding of copies).
    path.write_text("".join(json.dumps(row | {"n": n}) + "\n" for n in range(count)))
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def flaky_upstream():
    with ScriptedOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def stack(flaky_upstream):
    head_port = free_port()
    running = RunningStack(
        f"+head_server.port={head_port}",
        f"+policy_base_url={flaky_upstream.url}",
        "+policy_api_key=x",
        "+policy_model_name=m",
    )
    running.wait_ready()
    yield head_port
    running.process.send_signal(signal.SIGINT)
    running.process.wait(timeout=15)


def collect(head_port: int, tasks: Path, output: Path, *extra: str, timeout: float = 120):
    return cli(
        "ng_collect_rollouts",
        f"+agent_name={TUTORIAL_AGENT}",
        f"+input_jsonl_fpath={tasks}",
        f"+output_jsonl_fpath={output}",
        f"+head_server.port={head_port}",
        *extra,
        timeout=timeout,
    )


@pytest.mark.parametrize("status", [500, 429])
def test_an_upstream_failing_one_request_in_three_still_yields_every_row(stack, flaky_upstream, tmp_path, status):
    flaky_upstream.fault_every, flaky_upstream.fault_status = 3, status
    flaky_upstream.retry_after_s = 0.05 if status == 429 else None
    before = len(flaky_upstream.requests)
    try:
        result = collect(
            stack, write_tasks(tmp_path / "tasks.jsonl", 20), tmp_path / "out.jsonl", "+num_samples_in_parallel=8"
        )
    finally:
        flaky_upstream.fault_every = 0
    assert result.returncode == 0, result.stderr
    rows = read_rows(tmp_path / "out.jsonl")
    assert len(rows) == 20 and all(row["reward"] == 1.0 for row in rows)
    assert not (tmp_path / "out_failures.jsonl").exists()
    # 40 model calls were needed; the faults forced extra attempts.
    assert len(flaky_upstream.requests) - before > 40


def test_a_dead_upstream_gives_failure_records_and_a_nonzero_exit_not_a_hang(tmp_path):
    dead_port = free_port()  # nothing listens here
    head_port = free_port()
    started = time.monotonic()
    result = cli(
        "ng_collect_rollouts",
        f"+config_paths=[{TUTORIAL_CONFIGS}]",
        f"+head_server.port={head_port}",
        f"+policy_base_url=http://127.0.0.1:{dead_port}/v1",
        "+policy_api_key=x",
        "+policy_model_name=m",
        "+policy_model.responses_api_models.openai_model.max_attempts=2",
        f"+agent_name={TUTORIAL_AGENT}",
        f"+input_jsonl_fpath={write_tasks(tmp_path / 'tasks.jsonl', 3)}",
        f"+output_jsonl_fpath={tmp_path / 'out.jsonl'}",
        "+max_attempts=2",
        timeout=90,
    )
    assert result.returncode == 1
    assert time.monotonic() - started < 60
    assert read_rows(tmp_path / "out.jsonl") == []  # never scored as reward 0
    failures = read_rows(tmp_path / "out_failures.jsonl")
    assert sorted(f["_ng_task_index"] for f in failures) == [0, 1, 2]
    for failure in failures:
        assert failure["attempts"] == 2 and failure["status_code"] == 502, failure
        assert "cannot connect" in failure["message"] and str(dead_port) in failure["message"]
    assert "3 rollouts failed" in result.stderr and "+resume=true" in result.stderr


def test_kill_9_mid_run_then_resume_yields_exactly_one_row_per_pair(stack, flaky_upstream, tmp_path):
    tasks = write_tasks(tmp_path / "tasks.jsonl", 60)
    output = tmp_path / "out.jsonl"
    flaky_upstream.latency_s = 0.05
    try:
        process = spawn(
            "ng_collect_rollouts",
            f"+agent_name={TUTORIAL_AGENT}",
            f"+input_jsonl_fpath={tasks}",
            f"+output_jsonl_fpath={output}",
            f"+head_server.port={stack}",
            "+num_repeats=2",
            "+num_samples_in_parallel=4",
        )
        deadline = time.monotonic() + 60
        while not output.exists() or len(output.read_text().splitlines()) < 10:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        partial = len(read_rows(output))
        assert 10 <= partial < 120
        # Simulate the torn write a crash can leave behind.
        with output.open("a") as handle:
            handle.write('{"responses_create_params": {"inp')

        refused = collect(stack, tasks, output, "+num_repeats=2")
        assert refused.returncode == 2 and "+resume=true" in refused.stderr

        resumed = collect(stack, tasks, output, "+num_repeats=2", "+resume=true", "+num_samples_in_parallel=16")
    finally:
        flaky_upstream.latency_s = 0.0
    assert resumed.returncode == 0, resumed.stderr
    assert "Repaired a torn last line" in resumed.stderr
    rows = read_rows(output)
    keys = [(row["_ng_task_index"], row["_ng_rollout_index"]) for row in rows]
    assert len(keys) == len(set(keys)) == 120
    assert set(keys) == {(task, rollout) for task in range(60) for rollout in range(2)}
    metrics = json.loads((tmp_path / "out_metrics.json").read_text())
    assert metrics["counts"]["rollouts"] == 120 and metrics["counts"]["failed"] == 0


def test_a_malformed_line_is_reported_with_its_line_number_before_any_rollout(stack, flaky_upstream, tmp_path):
    tasks = write_tasks(tmp_path / "tasks.jsonl", 5)
    lines = tasks.read_text().splitlines()
    lines.insert(3, '{"responses_create_params": {"input": "hi"}, "oops": }')
    tasks.write_text("\n".join(lines) + "\n")
    before = len(flaky_upstream.requests)
    result = collect(stack, tasks, tmp_path / "out.jsonl")
    assert result.returncode == 2
    assert f"{tasks}:4: not valid JSON" in result.stderr
    assert len(flaky_upstream.requests) == before
    assert not (tmp_path / "out.jsonl").exists()


def test_a_row_without_responses_create_params_names_the_field(stack, tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"responses_create_params": {"input": "hi"}}\n{"question": "no params"}\n')
    result = collect(stack, tasks, tmp_path / "out.jsonl")
    assert result.returncode == 2
    assert f"{tasks}:2: missing required field (field `responses_create_params`)" in result.stderr


def test_an_existing_output_file_is_never_overwritten_without_being_asked(stack, tmp_path):
    tasks = write_tasks(tmp_path / "tasks.jsonl", 2)
    output = tmp_path / "out.jsonl"
    output.write_text('{"precious": true}\n')
    result = collect(stack, tasks, output)
    assert result.returncode == 2 and "already exists" in result.stderr
    assert output.read_text() == '{"precious": true}\n'
    replaced = collect(stack, tasks, output, "+overwrite=true")
    assert replaced.returncode == 0
    assert len(read_rows(output)) == 2 and "precious" not in output.read_text()


def test_an_unreachable_head_server_is_one_clear_line(tmp_path):
    tasks = write_tasks(tmp_path / "tasks.jsonl", 1)
    result = collect(free_port(), tasks, tmp_path / "out.jsonl", timeout=30)
    assert result.returncode == 1
    assert "cannot reach the head server" in result.stderr and "ng_run" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_materialized_inputs_record_what_was_sent_for_each_pair(stack, tmp_path):
    tasks = write_tasks(tmp_path / "tasks.jsonl", 2)
    result = collect(
        stack, tasks, tmp_path / "out.jsonl", "+num_repeats=3", "+responses_create_params.max_output_tokens=77"
    )
    assert result.returncode == 0, result.stderr
    materialized = read_rows(tmp_path / "out_materialized_inputs.jsonl")
    assert sorted((m["_ng_task_index"], m["_ng_rollout_index"]) for m in materialized) == [
        (t, r) for t in range(2) for r in range(3)
    ]
    assert all(m["responses_create_params"]["max_output_tokens"] == 77 for m in materialized)


def test_ctrl_c_keeps_what_was_written_and_says_how_to_resume(stack, flaky_upstream, tmp_path):
    tasks = write_tasks(tmp_path / "tasks.jsonl", 40)
    output = tmp_path / "out.jsonl"
    flaky_upstream.latency_s = 0.05
    try:
        process = spawn(
            "ng_collect_rollouts",
            f"+agent_name={TUTORIAL_AGENT}",
            f"+input_jsonl_fpath={tasks}",
            f"+output_jsonl_fpath={output}",
            f"+head_server.port={stack}",
            "+num_samples_in_parallel=2",
        )
        deadline = time.monotonic() + 60
        while not output.exists() or len(output.read_text().splitlines()) < 4:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        printed, _ = process.communicate(timeout=30)
        assert process.returncode == 130
        assert "+resume=true" in printed and str(output) in printed
        kept = read_rows(output)
        assert 4 <= len(kept) < 40
        resumed = collect(stack, tasks, output, "+resume=true")
    finally:
        flaky_upstream.latency_s = 0.0
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(row["_ng_task_index"] for row in read_rows(output)) == list(range(40))
