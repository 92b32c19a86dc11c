"""The server side of the link to the launcher that spawned it: read the bootstrap, die with the launcher.

The launcher (nemo_gym/launcher.py) gives each child one pipe, named by `LAUNCHER_FD_ENV`:
  * the first line on it is the child's `ServerBootstrap` (its resolved config, secrets included).
    A pipe and not an environment variable: a process's initial environment stays readable in
    /proc/<pid>/environ for its whole life, whatever it later does to `os.environ`;
  * the launcher then keeps its end open and never writes again. End of file means the launcher
    is gone (stopped, crashed, or killed with SIGKILL): the server stops itself (SIGTERM, so
    uvicorn shuts down in order), and kills its whole process group if that takes too long.

Where the launcher spawned us from its main thread it also asks for `PR_SET_PDEATHSIG` (the kernel
sends SIGTERM when the parent dies); it is not used otherwise because it fires when the *thread*
that forked exits, which would stop every server when a worker thread that started a stack ends.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

LAUNCHER_FD_ENV = "NEMO_GYM_LAUNCHER_FD"
"""File descriptor number of the pipe from the launcher (not secret: only the pipe's content is)."""
LAUNCHER_PID_ENV = "NEMO_GYM_LAUNCHER_PID"
PARENT_DEATH_SIGNAL_ENV = "NEMO_GYM_PARENT_DEATH_SIGNAL"
"""Set to "1" by a launcher that spawned from its main thread: arm PR_SET_PDEATHSIG."""
RAY_ADDRESS_ENV = "NEMO_GYM_RAY_ADDRESS"
"""Set only for a server that runs on a Ray cluster (`ng_run +ray_address=...`): the cluster's address
(its GCS host:port, not a secret), for a server that fans work out to the cluster."""

STOP_GRACE_S = 10.0
"""After the launcher is gone, the time a server gets to shut down before its process group is killed."""

_PR_SET_PDEATHSIG = 1


class NotLaunchedError(RuntimeError):
    """This process was not started by the launcher (there is no pipe to read a bootstrap from)."""


def read_bootstrap() -> bytes:
    """Read our bootstrap from the launcher's pipe, then watch the pipe for the launcher going away."""
    raw_fd = os.environ.get(LAUNCHER_FD_ENV)
    if not raw_fd or not raw_fd.isdigit():
        raise NotLaunchedError(f"{LAUNCHER_FD_ENV} is not set")
    fd = int(raw_fd)
    os.set_inheritable(fd, False)  # our own subprocesses have no business with it
    armed = os.environ.get(PARENT_DEATH_SIGNAL_ENV) == "1" and _arm_parent_death_signal()
    launcher_pid = os.environ.get(LAUNCHER_PID_ENV, "")
    if launcher_pid.isdigit() and os.getppid() != int(launcher_pid):
        sys.exit("error: the launcher exited before this server started")
    bootstrap = _read_line(fd)
    if not bootstrap:
        sys.exit("error: the launcher closed its pipe before sending this server's configuration")
    threading.Thread(target=_watch_launcher, args=(fd, armed), daemon=True, name="launcher-watch").start()
    return bootstrap


def _arm_parent_death_signal() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _read_line(fd: int) -> bytes:
    """The first line on the pipe (the launcher writes exactly one, then nothing), or b"" if the pipe
    closed before a whole line arrived."""
    buffer = bytearray()
    while not buffer.endswith(b"\n"):
        chunk = os.read(fd, 65536)
        if not chunk:
            return b""
        buffer += chunk
    return bytes(buffer[:-1])


def _watch_launcher(fd: int, parent_death_signal_armed: bool) -> None:
    while True:
        try:
            if not os.read(fd, 4096):
                break
        except OSError:
            break
    # The launcher is gone. The kernel already sent SIGTERM if PR_SET_PDEATHSIG was armed.
    if not parent_death_signal_armed:
        os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(STOP_GRACE_S)
    # Still here: shutdown is stuck. The launcher made us a process group leader, so the group is
    # ours and our own subprocesses; anything else, and only this process goes.
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
