"""The launcher under abuse, with real processes: Ctrl+C as a terminal sends it (SIGINT to the whole
foreground process group) prints one line, `kill -9` of the launcher leaves no server behind, and
the API key from env.yaml is in no child's /proc environ or command line (issue 8, items 0, 7, 10)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from nemo_gym.testing.inprocess import free_port
from nemo_gym.testing.ng_run_process import NgRunProcess, console_script
from tests.conftest import PROJECT_ROOT, TUTORIAL_AGENT, TUTORIAL_CONFIGS, TUTORIAL_DATA, child_env, spawn
from tests.e2e.recording_upstream import RecordingUpstream

pytestmark = pytest.mark.slow
SECRET = "sk-from-env-yaml-0123456789abcdef"


def is_progress_line(line: str) -> bool:
    return line.startswith("Collecting rollouts:") or not line.strip()


def server_processes(launcher_pid: int) -> list[psutil.Process]:
    return psutil.Process(launcher_pid).children(recursive=True)


def kill_leftovers(processes: list[psutil.Process]) -> None:
    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            pass


def test_ctrl_c_during_a_one_command_collection_prints_one_line_saying_how_to_resume(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    first_task = (PROJECT_ROOT / TUTORIAL_DATA).read_text().splitlines()[0]
    tasks.write_text((first_task + "\n") * 400)
    output = tmp_path / "rows.jsonl"
    with RecordingUpstream(latency_s=3.0) as upstream:  # every rollout is mid-flight when Ctrl+C comes
        collector = subprocess.Popen(
            [
                console_script("ng_collect_rollouts"),
                f"+config_paths=[{TUTORIAL_CONFIGS}]",
                f"+head_server.port={free_port()}",
                f"+policy_base_url={upstream.url}",
                "+policy_api_key=sk-unused",
                "+policy_model_name=m",
                f"+agent_name={TUTORIAL_AGENT}",
                f"+input_jsonl_fpath={tasks}",
                f"+output_jsonl_fpath={output}",
                "+num_samples_in_parallel=64",
            ],
            cwd=PROJECT_ROOT,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a shell job: its own foreground process group
        )
        servers: list[psutil.Process] = []
        try:
            assert upstream.wait_until(lambda: upstream.open >= 32, within_s=90), "no rollout reached the model"
            servers = server_processes(collector.pid)
            assert len(servers) == 3
            # The terminal's SIGINT goes to the foreground group; the servers are not in it.
            assert all(os.getpgid(server.pid) != collector.pid for server in servers)
            os.killpg(collector.pid, signal.SIGINT)
            out, _ = collector.communicate(timeout=60)
        finally:
            if collector.poll() is None:
                collector.kill()
            gone, alive = psutil.wait_procs(servers, timeout=15)
            kill_leftovers(alive)

    assert collector.returncode == 130, out
    lines = out.splitlines()
    after_start = lines[next(i for i, line in enumerate(lines) if line.startswith("Servers up")) + 1 :]
    messages = [line for line in after_start if not is_progress_line(line)]
    assert len(messages) == 1, "\n".join(messages[:40])
    assert "+resume=true" in messages[0] and str(output) in messages[0]
    assert "Traceback" not in out and "CancelledError" not in out
    assert alive == []


def test_ctrl_c_of_ng_run_with_requests_in_flight_stops_quietly(tmp_path):
    head_port = free_port()
    with RecordingUpstream(latency_s=5.0) as upstream:
        stack = NgRunProcess(
            TUTORIAL_CONFIGS,
            f"+head_server.port={head_port}",
            f"+policy_base_url={upstream.url}",
            "+policy_api_key=sk-unused",
            "+policy_model_name=m",
        ).wait_ready()
        servers = server_processes(stack.process.pid)
        collector = spawn(
            "ng_collect_rollouts",
            f"+agent_name={TUTORIAL_AGENT}",
            f"+input_jsonl_fpath={TUTORIAL_DATA}",
            f"+output_jsonl_fpath={tmp_path / 'rows.jsonl'}",
            f"+head_server.port={head_port}",
        )
        try:
            assert upstream.wait_until(lambda: upstream.open >= 3, within_s=60), stack.output
            ready_at = len(stack.lines)
            assert stack.stop() == 0
        finally:
            collector.kill()
            collector.wait()
            gone, alive = psutil.wait_procs(servers, timeout=15)
            kill_leftovers(alive)

    after_ready = [line for line in stack.lines[ready_at:] if line.strip()]
    assert after_ready == ["Stopping servers..."], "\n".join(after_ready[:40])
    assert alive == []


def test_kill_9_of_ng_run_leaves_no_server_running():
    stack = NgRunProcess(
        TUTORIAL_CONFIGS,
        f"+head_server.port={free_port()}",
        "+policy_base_url=http://127.0.0.1:9/v1",
        "+policy_api_key=sk-unused",
        "+policy_model_name=m",
    ).wait_ready()
    servers = server_processes(stack.process.pid)
    assert len(servers) == 3
    stack.process.kill()
    stack.process.wait()
    gone, alive = psutil.wait_procs(servers, timeout=20)
    kill_leftovers(alive)
    assert [process.pid for process in alive] == [], "servers outlived their launcher"


STACK_FROM_A_WORKER_THREAD = """
import sys, threading, time
from nemo_gym.config import load_global_config
from nemo_gym.launcher import LaunchOptions, Stack

config = load_global_config(sys.argv[1:], require_servers=True)
stack = Stack(config, LaunchOptions(echo_child_output=False))
worker = threading.Thread(target=stack.start)
worker.start()
worker.join()  # the thread that spawned the servers is gone; the servers must not care
time.sleep(1)
stack.check()
print("up", flush=True)
time.sleep(600)
"""


def test_servers_started_from_a_worker_thread_outlive_the_thread_but_not_the_process():
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            STACK_FROM_A_WORKER_THREAD,
            f"+config_paths=[{TUTORIAL_CONFIGS}]",
            f"+head_server.port={free_port()}",
            "+policy_base_url=http://127.0.0.1:9/v1",
            "+policy_api_key=sk-unused",
            "+policy_model_name=m",
        ],
        cwd=PROJECT_ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    servers: list[psutil.Process] = []
    try:
        assert launcher.stdout is not None
        assert launcher.stdout.readline().strip() == "up"  # stack.check(): no server died with the thread
        servers = server_processes(launcher.pid)
        assert len(servers) == 3 and all(server.is_running() for server in servers)
    finally:
        launcher.kill()
        launcher.wait()
    gone, alive = psutil.wait_procs(servers, timeout=20)
    kill_leftovers(alive)
    assert [process.pid for process in alive] == [], "servers outlived their launcher"


def test_kill_9_of_a_one_command_collection_leaves_no_server_running(tmp_path):
    with RecordingUpstream(latency_s=None) as upstream:
        collector = spawn(
            "ng_collect_rollouts",
            f"+config_paths=[{TUTORIAL_CONFIGS}]",
            f"+head_server.port={free_port()}",
            f"+policy_base_url={upstream.url}",
            "+policy_api_key=sk-unused",
            "+policy_model_name=m",
            f"+agent_name={TUTORIAL_AGENT}",
            f"+input_jsonl_fpath={TUTORIAL_DATA}",
            f"+output_jsonl_fpath={tmp_path / 'rows.jsonl'}",
        )
        try:
            assert upstream.wait_until(lambda: upstream.open >= 1, within_s=90), "no rollout reached the model"
            servers = server_processes(collector.pid)
        finally:
            collector.kill()
            collector.wait()
        gone, alive = psutil.wait_procs(servers, timeout=20)
        kill_leftovers(alive)
    assert len(servers) == 3 and [process.pid for process in alive] == []


def test_the_key_from_env_yaml_is_in_no_process_environ_or_command_line(tmp_path):
    with RecordingUpstream() as upstream:
        (tmp_path / "env.yaml").write_text(
            f"policy_base_url: {upstream.url}\npolicy_api_key: {SECRET}\npolicy_model_name: m\n"
        )
        head_port = free_port()
        # cwd holds env.yaml (read from the current directory first); the configs come from the project.
        stack = NgRunProcess(TUTORIAL_CONFIGS, f"+head_server.port={head_port}", cwd=tmp_path).wait_ready()
        try:
            processes = [psutil.Process(stack.process.pid), *server_processes(stack.process.pid)]
            assert len(processes) == 4
            for process in processes:
                environ = Path(f"/proc/{process.pid}/environ").read_bytes()
                cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
                assert SECRET.encode() not in environ, f"the key is in the environment of {process.cmdline()}"
                assert SECRET.encode() not in cmdline, f"the key is on the command line of {process.cmdline()}"

            # ...and yet the model server has it: the upstream sees it on a real rollout.
            result = subprocess.run(
                [
                    console_script("ng_collect_rollouts"),
                    f"+agent_name={TUTORIAL_AGENT}",
                    f"+input_jsonl_fpath={PROJECT_ROOT / TUTORIAL_DATA}",
                    f"+output_jsonl_fpath={tmp_path / 'rows.jsonl'}",
                    "+limit=1",
                    f"+head_server.port={head_port}",
                ],
                cwd=tmp_path,
                env=child_env(),
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert result.returncode == 0, result.stderr
            assert upstream.authorizations and set(upstream.authorizations) == {f"Bearer {SECRET}"}
        finally:
            stack.stop()
