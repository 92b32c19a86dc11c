"""Small jobs for testing `nemo_gym.compute` executors: module-level, so worker processes and Ray
workers can import them by name (a function defined in a test file cannot be)."""

from __future__ import annotations

import os
import signal
import time


def add(a: int, b: int) -> int:
    return a + b


def worker_pid() -> int:
    return os.getpid()


def sleep_then_return(seconds: float, value: str) -> str:
    time.sleep(seconds)
    return value


def die() -> None:
    """The worker process dies mid-job, as in a segfault or an OOM kill."""
    os.kill(os.getpid(), signal.SIGKILL)


def kill_parent_then_die() -> None:
    """Kills the process that started this worker (a Ray worker, on the Ray backend), then itself."""
    os.kill(os.getppid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def allocate_mb(megabytes: int) -> int:
    return len(bytearray(megabytes * 1024 * 1024))


def refuse(message: str) -> None:
    raise ValueError(message)
