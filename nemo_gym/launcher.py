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
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING

import psutil
from pydantic import BaseModel, ConfigDict, Field

from nemo_gym.client import ServerInfo, http_url
from nemo_gym.config import GlobalConfig, ServerInstance
from nemo_gym.errors import ConfigError, NemoGymError, ServerStartupError
from nemo_gym.free_ports import free_port
from nemo_gym.servers.base import CONFIG_ERROR_PREFIX, INSTANCE_NAME_ENV, SERVER_LISTEN_BACKLOG, ServerBootstrap
from nemo_gym.servers.head import HeadServer, Registry
from nemo_gym.servers.launcher_link import LAUNCHER_FD_ENV, LAUNCHER_PID_ENV, PARENT_DEATH_SIGNAL_ENV

if TYPE_CHECKING:
    import httpx  # imported where used: a co-located collector imports this module and starts nothing

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


@dataclass(frozen=True)
class ReplicaSlot:
    """One copy of a server instance and where it listens (replica 0 is the instance's own address)."""

    instance: ServerInstance
    replica: int
    host: str
    port: int

    @property
    def url(self) -> str:
        return http_url(self.host, self.port)

    @property
    def label(self) -> str:
        """How output and messages name it: the instance name, with `[replica]` when there are several."""
        return self.instance.name if self.instance.num_replicas == 1 else f"{self.instance.name}[{self.replica}]"


class ServerProcess:
    """One spawned server process (one replica of an instance) and the tail of its output."""

    def __init__(self, slot: ReplicaSlot, popen: subprocess.Popen[bytes], echo: IO[str] | None, lifeline: int):
        self.slot = slot
        self.instance = slot.instance
        self.popen = popen
        self.lifeline = lifeline
        """Our end of the child's pipe, open for as long as the child should live."""
        self.muted = False
        """Set when we stop the child: its shutdown chatter is kept in `tail`, not echoed."""
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.config_error: str | None = None
        self._reader = threading.Thread(target=self._pump, args=(echo,), daemon=True, name=f"out-{slot.label}")
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
                    echo.write(f"({self.slot.label}) {line}\n")
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
        return f"server {self.slot.label!r} exited with code {self.popen.returncode}. Last output:\n{lines}"


def head_allowed_hosts(config: GlobalConfig) -> list[str]:
    """`head_server.allowed_hosts`: further names the head server answers to (see BaseServerConfig.allowed_hosts)."""
    value = config.get("head_server.allowed_hosts") or []
    if not isinstance(value, list) or not all(isinstance(entry, str) for entry in value):
        raise ConfigError(f"head_server.allowed_hosts must be a list of host names, got {value!r}")
    return value


def answers_as(probe: httpx.Client, url: str, pid: int, timeout: httpx.Timeout | None = None) -> bool:
    """Whether the server at `url` is up and is process `pid`. Between a port being picked and the child
    binding it, another process (another stack, a test's server) may take it; the child then fails to
    bind, and a bare "/health answers 200" would hand that stranger this stack's requests."""
    import httpx

    try:
        answer = probe.get(f"{url}/health", timeout=timeout or probe.timeout)
        return answer.status_code == 200 and answer.json().get("pid") == pid
    except (httpx.HTTPError, ValueError, AttributeError):
        return False  # not up yet, or not one of our servers


class HealthProbe:
    """Asks one spawned server's `/health`, on a thread, until it answers as that process or the deadline.

    The server's port is held listening from before the spawn (`hold_port`), so a request made while
    the child still imports its code waits in the socket's queue and is answered the moment the child
    serves: one long request finds a server up sooner than polling would, and the launcher's loop
    stays free to notice a child that exits instead."""

    def __init__(self, process: ServerProcess, deadline: float):
        self.process = process
        self.deadline = deadline
        self.answered = threading.Event()
        self._stopped = threading.Event()
        threading.Thread(target=self._run, daemon=True, name=f"health-{process.slot.label}").start()

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        import httpx  # here, not at import: a co-located collector imports this module and starts nothing

        with httpx.Client(trust_env=False) as client:
            while not self._stopped.is_set():
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    return
                timeout = httpx.Timeout(min(remaining, 5.0), connect=0.5)
                if answers_as(client, self.process.slot.url, self.process.popen.pid, timeout):
                    self.answered.set()
                    return
                self._stopped.wait(0.05)


def hold_port(host: str, port: int) -> socket.socket:
    """A socket bound to `host:port` and listening, for a server process to serve (OSError if the port is
    taken). A listening socket keeps any other process from binding the port, SO_REUSEADDR or not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no clash
        sock.bind((host, port))
        sock.listen(SERVER_LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could take `host:port` now (bound as uvicorn binds; the port is not kept)."""
    try:
        hold_port(host, port).close()
    except OSError:
        return False
    return True


class Stack:
    """A running head server plus server processes. Use as a context manager, or start()/stop().

    This is the local backend (one subprocess per replica on this machine); `nemo_gym.launcher_ray`
    places the same servers on a Ray cluster and keeps this interface."""

    def __init__(
        self, config: GlobalConfig, options: LaunchOptions = LaunchOptions(), log: Callable[[str], None] | None = None
    ):
        self.config = config
        self.options = options
        self.log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self.processes: list[ServerProcess] = []
        self.slots = self._plan_slots()
        self.registry = Registry(self._initial_rows())
        self.head = HeadServer(
            self.registry, config.head_host, config.head_port, head_allowed_hosts(config), self.served_config_digest()
        )
        self.lost: list[str] = []
        """Replicas that died while a sibling lived on (reported, not fatal)."""
        self._held_ports: dict[str, socket.socket] = {}
        """Listening sockets bound by `check_ports`, by slot label, until each is handed to its server."""
        self._stopped = False

    def served_config_digest(self) -> str:
        """What the head says this stack was started from (`GlobalConfig.stack_digest`), so that a
        one-command collection of other configs never borrows it."""
        return self.config.stack_digest()

    def _plan_slots(self) -> list[ReplicaSlot]:
        """Replica 0 listens where the config says; further replicas on free ports of the same host."""
        taken = {instance.port for instance in self.config.instances} | {self.config.head_port}
        slots = []
        for instance in self.config.instances:
            slots.append(ReplicaSlot(instance, 0, instance.host, instance.port))
            for replica in range(1, instance.num_replicas):
                port = free_port(instance.host, taken)
                taken.add(port)
                slots.append(ReplicaSlot(instance, replica, instance.host, port))
        return slots

    def _initial_rows(self) -> list[ServerInfo]:
        return [self._info(slot) for slot in self.slots]

    @staticmethod
    def _info(slot: ReplicaSlot, url: str | None = None, node: str | None = None) -> ServerInfo:
        instance = slot.instance
        return ServerInfo(
            name=instance.name,
            server_type=instance.server_type,
            implementation=instance.implementation,
            url=url or slot.url,
            replica=slot.replica,
            node=node,
        )

    @property
    def head_url(self) -> str:
        return self.head.url

    @property
    def server_count(self) -> int:
        """Server processes started (every replica counts)."""
        return len(self.slots)

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        started = time.monotonic()
        self.check_ports()  # again is a no-op: the ports stay held
        self.head.start()
        try:
            self._start_servers()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started

    def _start_servers(self) -> None:
        for slot in self.slots:
            self.processes.append(self._spawn(slot))
        self._wait_until_healthy()

    def check_ports(self) -> None:
        """Raise ConfigError naming the first port something else already listens on; hold every server's
        port from here on (bound and listening), so that no other process takes it before the server
        that is spawned to serve it has imported its code. Done once; `start` does it if not done."""
        if not port_is_free(self.config.head_host, self.config.head_port):
            raise ConfigError(
                f"head server port {self.config.head_host}:{self.config.head_port} is already in use "
                f"(another ng_run?); choose another with +head_server.port=<port>"
            )
        for slot in self.slots:
            if slot.label in self._held_ports:
                continue
            try:
                self._held_ports[slot.label] = hold_port(slot.host, slot.port)
            except OSError:
                self._release_held_ports()
                instance = slot.instance
                setting = f"+{instance.name}.{instance.server_type}.{instance.implementation}.port=<port>"
                raise ConfigError(
                    f"port {slot.host}:{slot.port} of server {slot.label!r} is already in use"
                    + (f"; set {setting}" if slot.replica == 0 else "; start it again for another free port")
                ) from None

    def bootstrap_for(self, slot: ReplicaSlot, registry: list[ServerInfo]) -> ServerBootstrap:
        """What the replica's process is told: its own config (at its own address), the head, the registry."""
        instance = slot.instance
        entrypoint = instance.directory / instance.entrypoint
        if not entrypoint.is_file():
            raise ConfigError(f"server {instance.name!r}: entrypoint {entrypoint} does not exist")
        config = self.config.server_config_dict(instance.name)
        config.update(host=slot.host, port=slot.port)
        return ServerBootstrap(
            name=instance.name,
            config=config,
            head_url=self.head_url,
            registry=registry,
            config_key=f"{instance.name}.{instance.server_type}.{instance.implementation}",
        )

    def _spawn(self, slot: ReplicaSlot) -> ServerProcess:
        bootstrap = self.bootstrap_for(slot, self.registry.rows())
        echo = sys.stderr if self.options.echo_child_output else None
        # The child serves the socket held since `check_ports`; ours is closed once it is spawned, so that
        # a dead server refuses connections rather than leaving them queued on a socket nobody serves.
        with self._held_ports.pop(slot.label) as listener:
            process = start_server_process(slot, bootstrap, self.config.project_root, echo, listener=listener)
        self.registry.update(slot.instance.name, slot.replica, pid=process.popen.pid)
        return process

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + self.options.startup_timeout_s
        pending = {process.slot.label: process for process in self.processes}
        probes = {label: HealthProbe(process, deadline) for label, process in pending.items()}
        try:
            while pending:
                if self.head.failed:
                    raise ServerStartupError(f"the head server could not start on {self.head_url}")
                for label, process in list(pending.items()):
                    if probes[label].answered.is_set():
                        self.registry.update(process.slot.instance.name, process.slot.replica, healthy=True)
                        del pending[label]
                    elif process.popen.poll() is not None:
                        raise process.exit_error()
                if pending and time.monotonic() > deadline:
                    labels = ", ".join(sorted(pending))
                    raise ServerStartupError(
                        f"servers not healthy after {self.options.startup_timeout_s:.0f} s: {labels} "
                        f"(raise +startup_timeout_s=...)\n"
                        + "\n".join(pending[label].exit_report() for label in sorted(pending))
                    )
                if pending:
                    time.sleep(0.02)
        finally:
            for probe in probes.values():
                probe.stop()
        while not self.head.started:
            if self.head.failed or time.monotonic() > deadline:
                raise ServerStartupError(f"the head server could not start on {self.head_url}")
            time.sleep(0.02)

    def check(self) -> None:
        """Raise ServerStartupError when a server has no live replica left; a replica that dies while
        a sibling lives is reported once and marked unhealthy in the registry, and the stack goes on
        (a collection in progress loses only the rollouts that were on it, which it retries)."""
        if self._stopped:
            return
        for process in list(self.processes):
            if process.popen.poll() is not None:
                self._replica_died(process, process.exit_report())

    def _replica_died(self, process: ServerProcess, report: str) -> None:
        slot = process.slot
        self.registry.update(slot.instance.name, slot.replica, healthy=False)
        self.processes.remove(process)
        siblings = [other for other in self.processes if other.slot.instance.name == slot.instance.name]
        if not siblings:
            raise ServerStartupError(report)
        self.lost.append(slot.label)
        self.log(
            f"replica {slot.replica} of server {slot.instance.name!r} is gone; {len(siblings)} of "
            f"{slot.instance.num_replicas} replicas remain and take its new rollouts. {report}"
        )

    def table(self) -> str:
        rows = [("NAME", "TYPE", "IMPLEMENTATION", "URL", "PID")]
        rows.append(("head_server", "head", "-", self.head_url, str(os.getpid())))
        for process in self.processes:
            instance = process.instance
            rows.append(
                (
                    process.slot.label,
                    instance.server_type,
                    instance.implementation,
                    process.slot.url,
                    str(process.popen.pid),
                )
            )
        return format_table(rows)

    def stop(self) -> None:
        """Stop every child (SIGTERM to its process group, SIGKILL after the grace period) and the head."""
        if self._stopped:
            return
        self._stopped = True
        stop_server_processes(self.processes, self.options.stop_timeout_s, self.log)
        self._release_held_ports()  # ports of servers a failed start never spawned
        self.head.stop()

    def _release_held_ports(self) -> None:
        for listener in self._held_ports.values():
            listener.close()
        self._held_ports.clear()


def format_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def start_server_process(
    slot: ReplicaSlot,
    bootstrap: ServerBootstrap,
    project_root: pathlib.Path,
    echo: IO[str] | None,
    extra_env: dict[str, str] | None = None,
    listener: socket.socket | None = None,
) -> ServerProcess:
    """Spawn one replica: `python <entrypoint>` in its folder, its bootstrap written on its own pipe.
    With `listener` (see `hold_port`) the child serves that socket instead of binding its port itself.
    Used here and, on each node, by the Ray backend's actors."""
    if listener is not None:
        bootstrap = bootstrap.model_copy(update={"listen_fd": listener.fileno()})
    instance = slot.instance
    entrypoint = instance.directory / instance.entrypoint
    child_end, our_end = os.pipe()
    env = dict(os.environ)
    env.update(extra_env or {})
    env[INSTANCE_NAME_ENV] = instance.name
    env[LAUNCHER_FD_ENV] = str(child_end)
    env[LAUNCHER_PID_ENV] = str(os.getpid())
    # PR_SET_PDEATHSIG fires when the forking *thread* exits: ask for it only from the main thread.
    env[PARENT_DEATH_SIGNAL_ENV] = "1" if threading.current_thread() is threading.main_thread() else "0"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(instance.directory), str(project_root), env.get("PYTHONPATH", "")) if p
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
            pass_fds=(child_end,) if listener is None else (child_end, listener.fileno()),
        )
    except BaseException:
        os.close(our_end)
        raise
    finally:
        os.close(child_end)
    # A thread writes, so a config larger than the pipe buffer never blocks the spawning of the others.
    payload = bootstrap.model_dump_json().encode() + b"\n"
    threading.Thread(target=_write_all, args=(our_end, payload), daemon=True, name=f"bootstrap-{slot.label}").start()
    return ServerProcess(slot, popen, echo, our_end)


def stop_server_processes(processes: list[ServerProcess], timeout_s: float, log: Callable[[str], None]) -> None:
    """SIGTERM every process group, SIGKILL what is left after `timeout_s`, then any stray descendants."""
    descendants: list[psutil.Process] = []
    for process in processes:
        process.muted = True
        try:
            descendants.extend(psutil.Process(process.popen.pid).children(recursive=True))
        except psutil.Error:
            pass
        _signal_group(process.popen, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for process in processes:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            process.popen.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            log(f"server {process.slot.label!r} did not stop within {timeout_s:g} s; killed it")
            _signal_group(process.popen, signal.SIGKILL)
            process.popen.wait(timeout=5)
        _signal_group(process.popen, signal.SIGKILL)  # anything the child left in its group
        try:
            os.close(process.lifeline)
        except OSError:
            pass
    for child in descendants:
        try:
            child.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(descendants, timeout=2)


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
