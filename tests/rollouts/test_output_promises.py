"""The output promises of `ng_collect_rollouts` under abuse, with real processes: one writer per
file, resume only the same job, side files that agree with the rows after kills and resumes, and
disk-full / read-only output that ends in one line and a file `+resume=true` finishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from nemo_gym.rollouts import CollectionPolicy, CollectionSpec, collect_to_file
from nemo_gym.testing.inprocess import free_port
from nemo_gym.testing.ng_run_process import console_script
from nemo_gym.testing.scripted_openai import ScriptedOpenAI
from tests.conftest import PROJECT_ROOT, TUTORIAL_AGENT, child_env, cli
from tests.e2e.test_tutorial import RunningStack

pytestmark = pytest.mark.slow


def write_tasks(path: Path, count: int) -> Path:
    row = json.loads(Path("resources_servers/example_single_tool_call/data/example.jsonl").read_text().splitlines()[0])
    path.write_text("".join(json.dumps(row | {"n": i}) + "\n" for i in range(count)))
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def keys(rows: list[dict]) -> list[tuple[int, int]]:
    return [(row["_ng_task_index"], row["_ng_rollout_index"]) for row in rows]


@pytest.fixture(scope="module")
def upstream():
    with ScriptedOpenAI() as server:
        yield server


@pytest.fixture(scope="module")
def stack(upstream):
    head_port = free_port()
    running = RunningStack(
        f"+head_server.port={head_port}",
        f"+policy_base_url={upstream.url}",
        "+policy_api_key=x",
        "+policy_model_name=m",
    )
    running.wait_ready()
    yield head_port
    running.process.send_signal(signal.SIGINT)
    running.process.wait(timeout=15)


@pytest.fixture
def slow_upstream(upstream):
    upstream.latency_s = 0.05
    # 400 is not retried by the model server, so with +max_attempts=1 each fault is a failure record.
    upstream.fault_status = 400
    yield upstream
    upstream.latency_s = 0.0
    upstream.fault_every = 0
    upstream.fault_status = 500


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


def start_collect(head_port: int, tasks: Path, output: Path, *extra: str) -> subprocess.Popen[str]:
    """A collector in the background; its output goes nowhere, so a full pipe never stalls it."""
    return subprocess.Popen(
        [
            console_script("ng_collect_rollouts"),
            f"+agent_name={TUTORIAL_AGENT}",
            f"+input_jsonl_fpath={tasks}",
            f"+output_jsonl_fpath={output}",
            f"+head_server.port={head_port}",
            *extra,
        ],
        cwd=PROJECT_ROOT,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for_rows(output: Path, process: subprocess.Popen[str], at_least: int) -> None:
    deadline = time.monotonic() + 60
    while not output.exists() or len(output.read_bytes().splitlines()) < at_least:
        assert time.monotonic() < deadline, "the collection wrote no rows"
        assert process.poll() is None, "the collection ended before it was interrupted"
        time.sleep(0.02)


def test_a_second_collector_on_the_same_output_is_turned_away_naming_the_holder(stack, slow_upstream, tmp_path):
    slow_upstream.latency_s = 0.2
    tasks = write_tasks(tmp_path / "tasks.jsonl", 100)
    output = tmp_path / "out.jsonl"
    first = start_collect(stack, tasks, output, "+num_samples_in_parallel=1")  # >= 40 s: still running below
    try:
        wait_for_rows(output, first, 3)
        for extra in ((), ("+resume=true",), ("+overwrite=true",)):
            before = output.read_bytes()
            second = collect(stack, tasks, output, *extra, timeout=30)
            assert second.returncode == 2, second.stderr
            assert f"{output} is being written by another collector (PID {first.pid}" in second.stderr
            assert "Traceback" not in second.stderr
            # The second one wrote nothing: the first one's file only grew, line by whole line.
            assert output.read_bytes().startswith(before)
            assert first.poll() is None
        os.kill(first.pid, signal.SIGKILL)  # a lock left by a killed collector must not block the next run
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    slow_upstream.latency_s = 0.0
    resumed = collect(stack, tasks, output, "+resume=true")
    assert resumed.returncode == 0, resumed.stderr
    rows = read_rows(output)
    assert sorted(keys(rows)) == [(task, 0) for task in range(100)]
    assert not Path(f"{output}.lock").exists()


def test_a_second_collector_through_another_name_is_turned_away_and_the_first_file_stays_whole(
    stack, slow_upstream, tmp_path
):
    """A symlink to the output, a path through a symlinked folder and a hard link all name the running
    collector's file: each gets the plain second collector's refusal, and the file ends whole."""
    slow_upstream.latency_s = 0.5  # 100 rollouts one at a time: minutes, far longer than the refusals below
    tasks = write_tasks(tmp_path / "tasks.jsonl", 100)
    (tmp_path / "real").mkdir()
    output = tmp_path / "real" / "out.jsonl"
    link = tmp_path / "link.jsonl"
    link.symlink_to(output)
    (tmp_path / "linked").symlink_to(tmp_path / "real", target_is_directory=True)
    first = start_collect(stack, tasks, output, "+num_samples_in_parallel=1")
    try:
        wait_for_rows(output, first, 3)
        plain = collect(stack, tasks, output, "+resume=true", timeout=30)
        assert plain.returncode == 2, plain.stderr
        assert f"{output} is being written by another collector (PID {first.pid}" in plain.stderr
        hard = tmp_path / "hard.jsonl"
        os.link(output, hard)
        for name in (link, tmp_path / "linked" / "out.jsonl", hard):
            for extra in ((), ("+resume=true",), ("+overwrite=true",)):
                before = output.read_bytes()
                second = collect(stack, tasks, name, *extra, timeout=30)
                assert second.returncode == 2, second.stderr
                assert "Traceback" not in second.stderr
                if name == hard:  # shares no name with the output: the file itself is what is held
                    assert f"{hard} is being written by another collector (PID {first.pid} holds the file" in (
                        second.stderr
                    )
                else:
                    assert second.stderr == plain.stderr, (name, extra)
                assert output.read_bytes().startswith(before)  # only the first collector wrote, whole lines
                assert first.poll() is None
    finally:
        slow_upstream.latency_s = 0.0  # the first collector now finishes in seconds
    try:
        assert first.wait(timeout=120) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    data = output.read_bytes()
    assert b"\0" not in data
    rows = [json.loads(line) for line in data.splitlines()]  # every line is one valid JSON row
    assert sorted(keys(rows)) == [(task, 0) for task in range(100)]  # no duplicates, none missing
    assert not (tmp_path / "link_failures.jsonl").exists() and not (tmp_path / "hard_job.json").exists()
    assert [p.name for p in tmp_path.rglob("*.lock")] == []


def test_resume_refuses_a_different_job_and_names_the_field(stack, tmp_path):
    tasks = write_tasks(tmp_path / "tasks.jsonl", 4)
    output = tmp_path / "out.jsonl"
    first = collect(stack, tasks, output, "+num_repeats=2", "+limit=3", "+responses_create_params.temperature=0.5")
    assert first.returncode == 0, first.stderr
    job = json.loads((tmp_path / "out_job.json").read_text())
    assert job["input_fingerprint"]["num_tasks"] == 3 and job["num_repeats"] == 2 and job["limit"] == 3
    same = ("+num_repeats=2", "+limit=3", "+responses_create_params.temperature=0.5")
    other_tasks = write_tasks(tmp_path / "other.jsonl", 4)
    written = output.read_bytes()

    def refused(tasks_path: Path, *params: str) -> str:
        result = collect(stack, tasks_path, output, "+resume=true", *params, timeout=30)
        assert result.returncode == 2, result.stderr
        assert output.read_bytes() == written  # nothing of the other job was written
        return result.stderr

    assert "num_repeats differs" in refused(
        tasks, "+num_repeats=3", "+limit=3", "+responses_create_params.temperature=0.5"
    )
    assert "limit differs" in refused(tasks, "+num_repeats=2", "+limit=2", "+responses_create_params.temperature=0.5")
    assert "responses_create_params differs" in refused(
        tasks, "+num_repeats=2", "+limit=3", "+responses_create_params.temperature=0.9"
    )
    assert "input_jsonl_fpath differs" in refused(other_tasks, *same)

    # The same path with edited content is a different job too.
    lines = tasks.read_text().splitlines()
    edited = json.loads(lines[1]) | {"n": 99}
    tasks.write_text("\n".join([lines[0], json.dumps(edited), *lines[2:]]) + "\n")
    assert "input_jsonl_fpath content differs" in refused(tasks, *same)
    tasks.write_text("\n".join(lines) + "\n")

    # Lines appended beyond the limit leave the job's tasks, and so the job, unchanged.
    with tasks.open("a") as handle:
        handle.write(lines[0] + "\n")
    unchanged = collect(stack, tasks, output, "+resume=true", *same)
    assert unchanged.returncode == 0, unchanged.stderr

    # Without a limit, a grown input is another job, and the message says it grew.
    grown_output = tmp_path / "all.jsonl"
    assert collect(stack, other_tasks, grown_output).returncode == 0
    with other_tasks.open("a") as handle:
        handle.write(lines[0] + "\n")
    grown = collect(stack, other_tasks, grown_output, "+resume=true", timeout=30)
    assert grown.returncode == 2 and "the file grew, its first 4 tasks are unchanged" in grown.stderr

    # +overwrite=true starts the other job afresh.
    replaced = collect(stack, tasks, output, "+overwrite=true", "+num_repeats=3", "+limit=2")
    assert replaced.returncode == 0, replaced.stderr
    assert sorted(keys(read_rows(output))) == [(t, r) for t in range(2) for r in range(3)]
    assert json.loads((tmp_path / "out_job.json").read_text())["num_repeats"] == 3


def test_after_kills_and_resumes_the_side_files_agree_with_the_rows(stack, slow_upstream, tmp_path):
    tasks = write_tasks(tmp_path / "tasks.jsonl", 40)
    output = tmp_path / "out.jsonl"
    materialized = tmp_path / "out_materialized_inputs.jsonl"
    failures = tmp_path / "out_failures.jsonl"
    params = ("+num_repeats=2", "+max_attempts=1")

    # Run 1: a third of the model calls fail and there is one attempt each, so failure records are written.
    slow_upstream.fault_every = 3
    process = start_collect(stack, tasks, output, *params, "+num_samples_in_parallel=8")
    wait_for_rows(output, process, 6)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    # Run 2: killed again, with other pairs in flight.
    process = start_collect(stack, tasks, output, *params, "+resume=true", "+num_samples_in_parallel=8")
    wait_for_rows(output, process, len(read_rows(output)) + 6)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert failures.exists() and read_rows(failures), "the faults should have left failure records"

    # Run 3: the upstream is healthy again; the resume finishes every pair.
    slow_upstream.fault_every = 0
    slow_upstream.latency_s = 0.0
    resumed = collect(stack, tasks, output, *params, "+resume=true")
    assert resumed.returncode == 0, resumed.stderr
    every_pair = [(t, r) for t in range(40) for r in range(2)]
    assert sorted(keys(read_rows(output))) == every_pair
    materialized_keys = keys(read_rows(materialized))
    assert [pair for pair, count in Counter(materialized_keys).items() if count > 1] == []
    assert sorted(materialized_keys) == every_pair
    assert not failures.exists()  # every pair has its row: no stale failure record is left


def test_failures_keep_one_record_per_pair_still_missing(stack, slow_upstream, tmp_path):
    tasks = write_tasks(tmp_path / "tasks.jsonl", 12)
    output = tmp_path / "out.jsonl"
    slow_upstream.latency_s, slow_upstream.fault_every = 0.0, 2
    first = collect(stack, tasks, output, "+max_attempts=1", "+num_samples_in_parallel=1")
    assert first.returncode == 1
    second = collect(stack, tasks, output, "+max_attempts=1", "+num_samples_in_parallel=1", "+resume=true")
    rows, failed = read_rows(output), read_rows(tmp_path / "out_failures.jsonl")
    assert failed and not set(keys(rows)) & set(keys(failed))
    assert len(keys(failed)) == len(set(keys(failed)))
    assert sorted(keys(rows) + keys(failed)) == [(t, 0) for t in range(12)]
    assert f"{12 - len(rows)} (task, rollout) pairs have no row" in second.stderr


@pytest.fixture
def small_filesystem():
    """A 64 KiB tmpfs: a real ENOSPC, undone by unmounting (tests run as root)."""
    directory = Path(tempfile.mkdtemp(prefix="ng_full_"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(directory)], capture_output=True)
    if mounted.returncode != 0:
        directory.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)
        directory.rmdir()


def test_a_full_disk_is_one_line_and_the_file_resumes(stack, tmp_path, small_filesystem):
    tasks = write_tasks(tmp_path / "tasks.jsonl", 40)
    output = small_filesystem / "out.jsonl"
    full = collect(stack, tasks, output, "+num_samples_in_parallel=4")
    assert full.returncode == 1, full.stderr
    errors = [line for line in full.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "No space left on device" in errors[0] and str(small_filesystem) in errors[0]
    assert "+resume=true" in errors[0] and "Traceback" not in full.stderr
    assert 0 < len(output.read_bytes().splitlines()) < 40

    subprocess.run(["mount", "-o", "remount,size=8m", str(small_filesystem)], check=True)  # make room
    resumed = collect(stack, tasks, output, "+resume=true")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(keys(read_rows(output))) == [(t, 0) for t in range(40)]
    assert sorted(keys(read_rows(small_filesystem / "out_materialized_inputs.jsonl"))) == [(t, 0) for t in range(40)]


def test_a_read_only_output_is_one_line_and_the_file_resumes(stack, tmp_path, small_filesystem):
    tasks = write_tasks(tmp_path / "tasks.jsonl", 6)
    output = small_filesystem / "out.jsonl"
    assert collect(stack, tasks, output, "+limit=3").returncode == 0
    # Pretend the run was cut short: two rows are left, then the file system turns read-only.
    lines = output.read_bytes().splitlines(keepends=True)
    output.write_bytes(b"".join(lines[:2]))
    subprocess.run(["mount", "-o", "remount,ro", str(small_filesystem)], check=True)
    refused = collect(stack, tasks, output, "+limit=3", "+resume=true")
    assert refused.returncode == 1
    assert refused.stderr.strip().count("\n") == 0, refused.stderr
    assert "Read-only file system" in refused.stderr and str(output) in refused.stderr
    subprocess.run(["mount", "-o", "remount,rw", str(small_filesystem)], check=True)
    resumed = collect(stack, tasks, output, "+limit=3", "+resume=true")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(keys(read_rows(output))) == [(t, 0) for t in range(3)]


def test_collect_to_file_is_the_python_api_behind_the_cli(stack, tmp_path):
    from nemo_gym.aio import run_async

    tasks = write_tasks(tmp_path / "tasks.jsonl", 3)
    spec = CollectionSpec(agent_name=TUTORIAL_AGENT, input_jsonl_fpath=str(tasks), num_repeats=2)
    head = f"http://127.0.0.1:{stack}"
    report = run_async(collect_to_file(head, spec, tmp_path / "api.jsonl", policy=CollectionPolicy(concurrency=4)))
    assert report.complete and report.rows == report.expected == 6
    assert report.metrics["counts"]["rollouts"] == 6 and report.metrics_path.exists()
    again = run_async(collect_to_file(head, spec, tmp_path / "api.jsonl", mode="resume"))
    assert again.resumed_from == 6 and again.failed_this_run == 0 and again.complete
    # The CLI resumes a file the API wrote: one job, one identity, whichever door it came through.
    resumed = collect(stack, tasks, tmp_path / "api.jsonl", "+num_repeats=2", "+resume=true")
    assert resumed.returncode == 0 and "Resuming: 6 rollouts" in resumed.stderr
