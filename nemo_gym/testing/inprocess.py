"""Serve a server object over real HTTP on loopback from inside a test process.

`ng_run` is the way to run servers for real; this is for tests that want to look inside a server
(count the calls a resources server received, say) while still talking to it over HTTP.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import uvicorn

from nemo_gym.client import ServerClient, ServerInfo
from nemo_gym.free_ports import free_port
from nemo_gym.servers.base import SimpleServer, uvicorn_protocol_options
from nemo_gym.servers.head import HeadServer, Registry
from nemo_gym.servers.lean_app import LeanApp


class ThreadedServer:
    """A uvicorn server for a FastAPI app on a background thread. `uvicorn_options` override the
    defaults; `ThreadedServer.of(server)` serves a server object with the protocol settings
    (request deadlines, keep-alive) that `ng_run` gives it. One of our servers' apps is served as
    `ng_run` serves it: through its lean twin (`nemo_gym.servers.lean_app`)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int | None = None, **uvicorn_options: Any):
        self.host, self.port = host, port or free_port(host)
        options: dict[str, Any] = {"timeout_keep_alive": 30} | uvicorn_options
        config = uvicorn.Config(
            LeanApp.of(app, in_memory=False),
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            **options,
        )
        self._server = uvicorn.Server(config)
        # No signal handlers to switch off: uvicorn (>= 0.29) installs them only when run on the main thread.
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @classmethod
    def of(cls, server: SimpleServer, host: str = "127.0.0.1", port: int | None = None) -> ThreadedServer:
        return cls(server.setup_webserver(), host, port, **uvicorn_protocol_options(server.config))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ThreadedServer:
        self._thread.start()
        # Generous: on_startup may warm sandboxed interpreters, slow on a loaded 2-core machine.
        deadline = time.monotonic() + 60
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def registry_client(servers: dict[str, tuple[str, str]]) -> ServerClient:
    """A ServerClient that knows `name -> (server_type, url)` without a head server."""
    registry = {
        name: ServerInfo(name=name, server_type=kind, implementation="test", url=url)
        for name, (kind, url) in servers.items()
    }
    return ServerClient("http://127.0.0.1:9", registry=registry)


@contextlib.contextmanager
def running_head(servers: list[ServerInfo], timeout: float = 30.0) -> Iterator[str]:
    """A head server on 127.0.0.1 whose registry lists `servers`, for a collection to find them; yields its URL."""
    head = HeadServer(Registry(servers), "127.0.0.1", free_port())
    head.start()
    deadline = time.monotonic() + timeout
    try:
        while not head.started:
            if head.failed or time.monotonic() > deadline:
                raise RuntimeError("the head server did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{head.port}"
    finally:
        head.stop()


class PeakRss:
    """The largest resident set size of a process (this one by default: what servers run in-process with
    `ThreadedServer` cost at their worst) while inside `with PeakRss() as rss:`, sampled every 5 ms."""

    def __init__(self, pid: int | None = None) -> None:
        self.process = psutil.Process(pid)
        self.baseline = self.peak = self.process.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @property
    def grown(self) -> int:
        """Bytes above the size on entry at the worst moment."""
        return self.peak - self.baseline

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
