"""Several co-located stacks, one per worker process, for when one core is not enough (`+colocate_workers=N`).

Each worker is a process holding a whole co-located stack (`nemo_gym.colocated`: the agent and
resources servers, called in memory by each other) and serving its agents over HTTP on loopback. The
collector process keeps everything that must be single: the input stream, the one writer of the
output (its lock, job record and resume) and the retry policy. It sees each agent as a server with N
replicas, one per worker, so rollouts are spread over the workers as they free up (the input is
sharded on the fly, never in fixed slices) and each rollout stays on the worker that took it; a
rollout's deadline or Ctrl+C closes its connection, which cancels its work in the worker as over HTTP.

A worker reads its parameters (the command line the collector was given, which may hold keys) from a
pipe, never from its own command line or environment, and stops when that pipe closes: when the
collector goes away, however it goes, so do its workers.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import orjson
from pydantic import BaseModel

from nemo_gym.client import ServerInfo, http_url
from nemo_gym.config import GlobalConfig
from nemo_gym.errors import ServerStartupError
from nemo_gym.free_ports import free_port

READY_LINE = "colocated worker ready"


class WorkerBootstrap(BaseModel):
    """What the collector tells a worker, on its stdin."""

    argv: list[str]
    cwd: str
    head_url: str
    ports: dict[str, int]
    """Agent instance name -> the loopback port this worker serves it on."""


class ColocatedWorkers:
    """N worker processes, each a co-located stack serving its agents on its own loopback ports."""

    def __init__(self, config: GlobalConfig, argv: list[str], head_url: str, count: int, startup_timeout_s: float):
        from nemo_gym.colocated import colocated_instances

        self.config, self.argv, self.head_url, self.count = config, argv, head_url, count
        self.startup_timeout_s = startup_timeout_s
        self.agents = [i for i in colocated_instances(config) if i.server_type == "responses_api_agents"]
        taken: set[int] = set()
        self.ports: list[dict[str, int]] = []
        for _ in range(count):
            ports = {}
            for agent in self.agents:
                ports[agent.name] = free_port("127.0.0.1", taken)
                taken.add(ports[agent.name])
            self.ports.append(ports)
        self.processes: list[subprocess.Popen[bytes]] = []

    def rows(self) -> list[ServerInfo]:
        """The registry rows the collector routes by: each agent with one replica per worker."""
        return [
            ServerInfo(
                name=agent.name,
                server_type=agent.server_type,
                implementation=agent.implementation,
                url=http_url("127.0.0.1", ports[agent.name]),
                pid=process.pid,
                healthy=True,
                replica=index,
            )
            for agent in self.agents
            for index, (ports, process) in enumerate(zip(self.ports, self.processes))
        ]

    def start(self) -> None:
        try:
            for ports in self.ports:
                self.processes.append(self._spawn(ports))
            for index, process in enumerate(self.processes):
                self._wait_ready(index, process)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, ports: dict[str, int]) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.config.project_root), env.get("PYTHONPATH", "")) if p)
        process = subprocess.Popen(
            [sys.executable, "-m", "nemo_gym.colocated_workers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # a worker's log lines (an environment's crash) reach the user as the collector's own
            env=env,
            start_new_session=True,  # Ctrl+C reaches the collector, which ends its rollouts and then its workers
        )
        assert process.stdin is not None
        bootstrap = WorkerBootstrap(argv=self.argv, cwd=os.getcwd(), head_url=self.head_url, ports=ports)
        process.stdin.write(bootstrap.model_dump_json().encode() + b"\n")
        process.stdin.flush()  # and kept open: the worker lives as long as this pipe
        return process

    def _wait_ready(self, index: int, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            assert process.stdout is not None
            for raw in iter(process.stdout.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\n")
                if line == READY_LINE:
                    ready.set()
                    return
                lines.append(line)

        reader = threading.Thread(target=read, daemon=True, name=f"colocated-worker-{index}")
        reader.start()
        if not ready.wait(self.startup_timeout_s) or process.poll() is not None:
            said = "\n".join(f"    {line}" for line in lines[-20:]) or "    (no output)"
            raise ServerStartupError(
                f"co-located worker {index} did not start within {self.startup_timeout_s:g} s "
                f"(exit code {process.poll()}):\n{said}"
            )

    def stop(self) -> None:
        for process in self.processes:
            if process.stdin is not None:
                try:
                    process.stdin.close()  # the worker's signal to stop
                except OSError:
                    pass
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


async def _serve(bootstrap: WorkerBootstrap) -> None:
    import uvicorn

    from nemo_gym.colocated import ColocatedStack
    from nemo_gym.config import load_global_config
    from nemo_gym.servers.base import uvicorn_protocol_options
    from nemo_gym.servers.lean_app import LeanApp

    config = load_global_config(bootstrap.argv, cwd=Path(bootstrap.cwd))
    async with ColocatedStack(config, bootstrap.head_url) as stack:
        servers: list[uvicorn.Server] = []
        for name, port in bootstrap.ports.items():
            app = stack.local.apps[name].app
            options = uvicorn_protocol_options(stack.servers[name].config)
            served = LeanApp.of(app, in_memory=False)  # a socket: its disconnect watch stays
            uvicorn_config = uvicorn.Config(
                served, host="127.0.0.1", port=port, lifespan="off", log_level="warning", access_log=False,
                backlog=16384, **options,
            )  # fmt: skip
            servers.append(uvicorn.Server(uvicorn_config))
        tasks = [asyncio.create_task(uvicorn_server.serve()) for uvicorn_server in servers]
        while not all(uvicorn_server.started for uvicorn_server in servers):
            if any(task.done() for task in tasks):
                await asyncio.gather(*tasks)
                raise ServerStartupError("a co-located worker's server stopped while starting")
            await asyncio.sleep(0.01)
        print(READY_LINE, flush=True)
        await _parent_gone()
        for uvicorn_server in servers:
            uvicorn_server.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)


async def _parent_gone() -> None:
    """Return when stdin closes (the collector stopped us, or is gone)."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.buffer.read)


def main() -> None:
    from nemo_gym.aio import raise_open_file_limit, run_async

    bootstrap = WorkerBootstrap.model_validate(orjson.loads(sys.stdin.buffer.readline()))
    os.chdir(bootstrap.cwd)
    raise_open_file_limit()
    try:
        run_async(_serve(bootstrap))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
