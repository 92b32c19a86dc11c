"""Start, watch and stop a stack of servers: the head server plus one process per server instance.

Shared by `ng_run` and by `ng_collect_rollouts +config_paths=[...]` (one-command collection).
Each child runs `python <entrypoint>` with the same interpreter (servers share the installed
environment, so startup takes seconds), in its implementation folder, in its own session and
process group, so that a terminal's Ctrl+C reaches only us and we stop children in order (their
output is no longer echoed once we stop them: a stop prints our one line, not their shutdown).

Each child gets one pipe (see nemo_gym.servers.launcher_link): we write its own resolved config on
it, never in its environment or on its command line (both stay readable in /proc), then keep our
end open for the child's life. When we go away, however we go (SIGKILL included), the kernel closes
it and the child stops itself: no server outlives its launcher.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

import httpx
import psutil
from pydantic import BaseModel, ConfigDict, Field

from nemo_gym.client import ServerInfo
from nemo_gym.config import GlobalConfig, ServerInstance
from nemo_gym.errors import ConfigError, NemoGymError, ServerStartupError
from nemo_gym.servers.base import CONFIG_ERROR_PREFIX, INSTANCE_NAME_ENV, ServerBootstrap
from nemo_gym.servers.head import HeadServer, Registry
from nemo_gym.servers.launcher_link import LAUNCHER_FD_ENV, LAUNCHER_PID_ENV, PARENT_DEATH_SIGNAL_ENV

TAIL_LINES = 40


class LaunchOptions(BaseModel):
    """How long to wait for servers, and how loudly they speak."""

    model_config = ConfigDict(frozen=True)

    startup_timeout_s: float = Field(60.0, gt=0)
    """Every server must answer /health within this many seconds of being spawned."""
    stop_timeout_s: float = Field(5.0, gt=0)
    """Grace period after SIGTERM before a child's process group is killed."""
    echo_child_output: bool = True
    """Copy children's output to our stderr, each line prefixed with `(instance name)`."""


class ServerProcess:
    """One spawned server instance and the tail of its output."""

    def __init__(self, instance: ServerInstance, popen: subprocess.Popen[bytes], echo: IO[str] | None, lifeline: int):
        self.instance = instance
        self.popen = popen
        self.lifeline = lifeline
        """Our end of the child's pipe, open for as long as the child should live."""
        self.muted = False
        """Set when we stop the child: its shutdown chatter is kept in `tail`, not echoed."""
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.config_error: str | None = None
        self._reader = threading.Thread(target=self._pump, args=(echo,), daemon=True, name=f"out-{instance.name}")
        self._reader.start()

    def _pump(self, echo: IO[str] | None) -> None:
        assert self.popen.stdout is not None
        for raw in iter(self.popen.stdout.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            if line.startswith(CONFIG_ERROR_PREFIX):  # reported once, as our own error, not echoed
                self.config_error = line.removeprefix(CONFIG_ERROR_PREFIX)
                continue
            self.tail.append(line)
            if echo is not None and not self.muted:
                try:
                    echo.write(f"({self.instance.name}) {line}\n")
                    echo.flush()
                except (ValueError, OSError):
                    pass

    def exit_error(self) -> NemoGymError:
        """Why the process exited: its config error (exit 2 for the command too), else its last output."""
        self._reader.join(timeout=1)
        if self.config_error:
            return ConfigError(self.config_error)
        return ServerStartupError(self.exit_report())

    def exit_report(self) -> str:
        self._reader.join(timeout=1)
        lines = "\n".join(f"    {line}" for line in self.tail) or "    (no output)"
        return f"server {self.instance.name!r} exited with code {self.popen.returncode}. Last output:\n{lines}"


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class Stack:
    """A running head server plus server processes. Use as a context manager, or start()/stop()."""

    def __init__(
        self, config: GlobalConfig, options: LaunchOptions = LaunchOptions(), log: Callable[[str], None] | None = None
    ):
        self.config = config
        self.options = options
        self.log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self.processes: list[ServerProcess] = []
        self.registry = Registry([self._info(instance) for instance in config.instances])
        self.head = HeadServer(self.registry, config.head_host, config.head_port)
        self._stopped = False

    @staticmethod
    def _info(instance: ServerInstance) -> ServerInfo:
        return ServerInfo(
            name=instance.name,
            server_type=instance.server_type,
            implementation=instance.implementation,
            url=instance.url,
        )

    @property
    def head_url(self) -> str:
        return self.head.url

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        started = time.monotonic()
        self.check_ports()
        self.head.start()
        try:
            for instance in self.config.instances:
                self.processes.append(self._spawn(instance))
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started

    def check_ports(self) -> None:
        """Raise ConfigError naming the first configured port something else already listens on."""
        if not _port_is_free(self.config.head_host, self.config.head_port):
            raise ConfigError(
                f"head server port {self.config.head_host}:{self.config.head_port} is already in use "
                f"(another ng_run?); choose another with +head_server.port=<port>"
            )
        for instance in self.config.instances:
            if not _port_is_free(instance.host, instance.port):
                raise ConfigError(
                    f"port {instance.host}:{instance.port} of server {instance.name!r} is already in use; "
                    f"set +{instance.name}.{instance.server_type}.{instance.implementation}.port=<port>"
                )

    def _spawn(self, instance: ServerInstance) -> ServerProcess:
        entrypoint = instance.directory / instance.entrypoint
        if not entrypoint.is_file():
            raise ConfigError(f"server {instance.name!r}: entrypoint {entrypoint} does not exist")
        bootstrap = ServerBootstrap(
            name=instance.name,
            config=self.config.server_config_dict(instance.name),
            head_url=self.head_url,
            registry=self.registry.rows(),
            config_key=f"{instance.name}.{instance.server_type}.{instance.implementation}",
        )
        child_end, our_end = os.pipe()
        env = dict(os.environ)
        env[INSTANCE_NAME_ENV] = instance.name
        env[LAUNCHER_FD_ENV] = str(child_end)
        env[LAUNCHER_PID_ENV] = str(os.getpid())
        # PR_SET_PDEATHSIG fires when the forking *thread* exits: ask for it only from the main thread.
        env[PARENT_DEATH_SIGNAL_ENV] = "1" if threading.current_thread() is threading.main_thread() else "0"
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(instance.directory), str(self.config.project_root), env.get("PYTHONPATH", "")) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        try:
            popen = subprocess.Popen(
                [sys.executable, str(entrypoint)],
                cwd=instance.directory,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(child_end,),
            )
        except BaseException:
            os.close(our_end)
            raise
        finally:
            os.close(child_end)
        # A thread writes, so a config larger than the pipe buffer never blocks the spawning of the others.
        payload = bootstrap.model_dump_json().encode() + b"\n"
        threading.Thread(
            target=_write_all, args=(our_end, payload), daemon=True, name=f"bootstrap-{instance.name}"
        ).start()
        self.registry.update(instance.name, pid=popen.pid)
        return ServerProcess(instance, popen, sys.stderr if self.options.echo_child_output else None, our_end)

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + self.options.startup_timeout_s
        pending = {process.instance.name: process for process in self.processes}
        with httpx.Client(timeout=httpx.Timeout(2.0, connect=0.5), trust_env=False) as probe:
            while pending:
                if self.head.failed:
                    raise ServerStartupError(f"the head server could not start on {self.head_url}")
                for name, process in list(pending.items()):
                    if process.popen.poll() is not None:
                        raise process.exit_error()
                    try:
                        if probe.get(f"{process.instance.url}/health").status_code == 200:
                            self.registry.update(name, healthy=True)
                            del pending[name]
                    except httpx.HTTPError:
                        pass
                if pending and time.monotonic() > deadline:
                    names = ", ".join(sorted(pending))
                    raise ServerStartupError(
                        f"servers not healthy after {self.options.startup_timeout_s:.0f} s: {names} "
                        f"(raise +startup_timeout_s=...)\n"
                        + "\n".join(pending[n].exit_report() for n in sorted(pending))
                    )
                if pending:
                    time.sleep(0.05)
            while not self.head.started:
                if self.head.failed or time.monotonic() > deadline:
                    raise ServerStartupError(f"the head server could not start on {self.head_url}")
                time.sleep(0.02)

    def check(self) -> None:
        """Raise ServerStartupError if any child has exited."""
        for process in self.processes:
            if process.popen.poll() is not None and not self._stopped:
                self.registry.update(process.instance.name, healthy=False)
                raise ServerStartupError(process.exit_report())

    def table(self) -> str:
        rows = [("NAME", "TYPE", "IMPLEMENTATION", "URL", "PID")]
        rows.append(("head_server", "head", "-", self.head_url, str(os.getpid())))
        for process in self.processes:
            instance = process.instance
            rows.append(
                (instance.name, instance.server_type, instance.implementation, instance.url, str(process.popen.pid))
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)

    def stop(self) -> None:
        """Stop every child (SIGTERM to its process group, SIGKILL after the grace period) and the head."""
        if self._stopped:
            return
        self._stopped = True
        descendants: list[psutil.Process] = []
        for process in self.processes:
            process.muted = True
            try:
                descendants.extend(psutil.Process(process.popen.pid).children(recursive=True))
            except psutil.Error:
                pass
            _signal_group(process.popen, signal.SIGTERM)
        deadline = time.monotonic() + self.options.stop_timeout_s
        for process in self.processes:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                process.popen.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                self.log(
                    f"server {process.instance.name!r} did not stop within {self.options.stop_timeout_s:g} s; killed it"
                )
                _signal_group(process.popen, signal.SIGKILL)
                process.popen.wait(timeout=5)
            _signal_group(process.popen, signal.SIGKILL)  # anything the child left in its group
            os.close(process.lifeline)
        for child in descendants:
            try:
                child.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(descendants, timeout=2)
        self.head.stop()


def _signal_group(popen: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(popen.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _write_all(fd: int, payload: bytes) -> None:
    """Write the child's bootstrap; leave the pipe open (closing it would tell the child to stop)."""
    view = memoryview(payload)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        pass  # the child died before reading; the supervisor reports its exit
