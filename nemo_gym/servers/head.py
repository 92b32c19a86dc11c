"""The head server: the registry of running server instances (name, kind, implementation, URL, health).

It never serves a config value: NeMo Gym served the whole merged config, API keys included,
unauthenticated at `/global_config_dict_yaml`. Clients here only ever need name -> URL, and
`/stack_identity` gives a digest of the config the stack was started from (`GlobalConfig.stack_digest`),
so a one-command collection can tell its own stack from another one on the same port.
"""

from __future__ import annotations

import threading
from typing import Any

import uvicorn
from fastapi import FastAPI

from nemo_gym.client import ServerInfo, http_url
from nemo_gym.servers.base import new_app
from nemo_gym.servers.request_guard import RequestGuard


class Registry:
    """Thread-safe list of `ServerInfo` (one row per replica), updated by the launcher, read by the head server."""

    def __init__(self, servers: list[ServerInfo]):
        self._lock = threading.Lock()
        self._servers = {(server.name, server.replica): server for server in servers}

    def rows(self) -> list[ServerInfo]:
        with self._lock:
            return list(self._servers.values())

    def update(self, name: str, replica: int = 0, **changes: Any) -> None:
        with self._lock:
            self._servers[(name, replica)] = self._servers[(name, replica)].model_copy(update=changes)

    def put(self, row: ServerInfo) -> None:
        """Add or replace a row (the Ray backend registers each replica once it knows its node's address)."""
        with self._lock:
            self._servers[(row.name, row.replica)] = row


def build_head_app(
    registry: Registry,
    bound_host: str = "127.0.0.1",
    allowed_hosts: list[str] | None = None,
    config_digest: str | None = None,
) -> FastAPI:
    app = new_app(title="nemo_gym head server")
    app.add_middleware(
        RequestGuard, bound_host=bound_host, allowed_hosts=allowed_hosts or [], setting="head_server.allowed_hosts"
    )

    async def health() -> dict[str, str]:
        return {"status": "ok", "kind": "head"}

    async def server_instances() -> list[ServerInfo]:
        return registry.rows()

    async def stack_identity() -> dict[str, str | None]:
        return {"config_digest": config_digest}

    app.get("/")(health)
    app.get("/health")(health)
    app.get("/server_instances")(server_instances)
    app.get("/stack_identity")(stack_identity)
    return app


class HeadServer:
    """Runs the head app with uvicorn in a daemon thread of the calling process."""

    def __init__(
        self,
        registry: Registry,
        host: str,
        port: int,
        allowed_hosts: list[str] | None = None,
        config_digest: str | None = None,
    ):
        self.registry, self.host, self.port = registry, host, port
        config = uvicorn.Config(
            build_head_app(registry, host, allowed_hosts, config_digest),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            loop="asyncio",
            http="httptools",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        # No signal handlers to switch off: uvicorn (>= 0.29) installs them only when run on the main thread.
        self._thread = threading.Thread(target=self._server.run, name="head-server", daemon=True)

    @property
    def url(self) -> str:
        return http_url(self.host, self.port)

    def start(self) -> None:
        self._thread.start()

    @property
    def started(self) -> bool:
        return bool(self._server.started)

    @property
    def failed(self) -> bool:
        return not self._thread.is_alive() and not self._server.started

    def stop(self) -> None:
        """Stop the server; safe to call when start() never ran (a launch that failed before it)."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=5)
