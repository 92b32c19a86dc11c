"""The server side of the launcher link, with real processes: the bootstrap arrives through the pipe
(never the environment), closing the pipe stops the server, and a server started by hand says why
it cannot run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from nemo_gym.servers.launcher_link import LAUNCHER_FD_ENV, LAUNCHER_PID_ENV, PARENT_DEATH_SIGNAL_ENV
from tests.conftest import PROJECT_ROOT, child_env

CHILD = """
import time
from nemo_gym.servers.launcher_link import read_bootstrap
print(read_bootstrap().decode(), flush=True)
time.sleep(60)
"""


def test_the_bootstrap_comes_through_the_pipe_and_closing_the_pipe_stops_the_server():
    child_end, our_end = os.pipe()
    env = child_env() | {
        LAUNCHER_FD_ENV: str(child_end),
        LAUNCHER_PID_ENV: str(os.getpid()),
        PARENT_DEATH_SIGNAL_ENV: "0",
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        env=env,
        pass_fds=(child_end,),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    os.close(child_end)
    try:
        secret_config = '{"openai_api_key": "sk-only-in-the-pipe"}'
        os.write(our_end, secret_config.encode() + b"\n")
        assert child.stdout is not None
        assert child.stdout.readline().strip() == secret_config
        assert b"sk-only-in-the-pipe" not in Path(f"/proc/{child.pid}/environ").read_bytes()
    finally:
        os.close(our_end)  # what the kernel does when a launcher dies, however it dies
    assert child.wait(timeout=20) == -signal.SIGTERM


def test_a_server_started_by_hand_says_it_needs_ng_run():
    result = subprocess.run(
        [sys.executable, "responses_api_agents/simple_agent/app.py"],
        cwd=PROJECT_ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: SimpleAgent must be started by ng_run ({LAUNCHER_FD_ENV} is not set)"
    ]
