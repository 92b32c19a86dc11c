"""`ng_run` as a real subprocess, for end-to-end tests of environments and the stack.

    with NgRunProcess(["my_env/configs/my_env.yaml", "responses_api_models/openai_model/configs/openai_model.yaml"],
                      f"+head_server.port={port}", f"+policy_base_url={upstream.url}") as stack:
        ...  # ng_collect_rollouts against +head_server.port=port

Its output (children's lines included) is collected on a thread, so a test can assert on it and
a failed start shows everything ng_run printed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

READY_MARKER = "servers are up"


def console_script(command: str) -> str:
    """The `ng_*` script installed next to this interpreter, else whatever is on PATH."""
    candidate = Path(sys.executable).with_name(command)
    return str(candidate) if candidate.exists() else (shutil.which(command) or command)


class NgRunProcess:
    def __init__(
        self,
        config_paths: Sequence[str] | str,
        *overrides: str,
        cwd: str | Path | None = None,
        env: dict[str, str] | None = None,
    ):
        paths = config_paths if isinstance(config_paths, str) else ",".join(config_paths)
        child_env = dict(os.environ if env is None else env)
        # Its own session, as a shell gives a job: `stop()` sends SIGINT to the whole process group,
        # exactly what a terminal's Ctrl+C does, and the test runner's own group is left alone.
        self.process = subprocess.Popen(
            [console_script("ng_run"), f"+config_paths=[{paths}]", *overrides],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=child_env,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = 60) -> NgRunProcess:
        deadline = time.monotonic() + timeout
        while not any(READY_MARKER in line for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("ng_run did not come up:\n" + self.output)
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 20) -> int:
        """Ctrl+C as a terminal sends it (SIGINT to ng_run's process group); returns ng_run's exit code."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def __enter__(self) -> NgRunProcess:
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()
