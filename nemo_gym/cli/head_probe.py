"""Is a stack's head server answering at an address, and which config was it started from?

One probe for every command that either talks to running servers or starts its own. The standard
library's http.client, not httpx or aiohttp: it runs once per command, and importing httpx cost ~15% of a
CLI's start-up. Nor urllib.request, which brings its opener machinery (and tempfile, for its response
objects) into every collector for two GETs on loopback that never go through a proxy.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from nemo_gym.config import GlobalConfig, load_global_config
from nemo_gym.errors import ConfigError
from nemo_gym.free_ports import free_port


@dataclass(frozen=True)
class RunningHead:
    url: str
    config_digest: str | None
    """`GlobalConfig.stack_digest()` of the running stack; None when its head does not say (an older version)."""


def head_is_up(head_url: str) -> bool:
    return probe_head(head_url) is not None


def probe_head(head_url: str, timeout_s: float = 1.0) -> RunningHead | None:
    """The head answering at `head_url`, or None when nothing healthy answers there."""
    try:
        status, _ = _get(head_url, "/health", timeout_s)
    except (http.client.HTTPException, OSError, ValueError):
        return None
    if status != 200:
        return None
    digest: str | None = None
    try:
        status, body = _get(head_url, "/stack_identity", timeout_s)
        if status == 200:
            value = json.loads(body).get("config_digest")
            digest = value if isinstance(value, str) else None
    except (http.client.HTTPException, OSError, ValueError, AttributeError):
        pass  # a head without the endpoint: its stack cannot be told apart, so it is taken as it is
    return RunningHead(head_url, digest)


def _get(base_url: str, path: str, timeout_s: float) -> tuple[int, bytes]:
    """Status and body of `GET base_url + path`, on a connection of its own (no proxy: loopback)."""
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=timeout_s)
    try:
        connection.request("GET", address.path.rstrip("/") + path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def stack_to_use(
    config: GlobalConfig, argv: list[str], note: Callable[[str], None]
) -> tuple[GlobalConfig, RunningHead | None]:
    """For a command that starts its own servers when none run: the config to go on with, and the
    running head to use (None: start the config's servers).

    A stack already running at the head address is used when it was started from the same configs,
    or when this command configures no servers (the NeMo Gym way: `ng_run` in one terminal). One
    started from other configs is never used in its place, which would collect another model's or
    environment's rows under this command's name: with the default head port the command starts its
    own stack on a free one; with a head port it was given, it stops with one line.
    """
    running = probe_head(config.head_url)
    if running is None or not config.instances:
        return config, running
    if running.config_digest is None or running.config_digest == config.stack_digest():
        note(f"Servers are already running at {running.url}; using them instead of starting the configured ones.")
        return config, running
    if config.head_port_chosen:
        raise ConfigError(
            f"another stack, started from different configs, holds the head port: {running.url}; stop it, "
            f"or give this command a free +head_server.port"
        )
    port = free_port(config.head_host)
    note(
        f"Another stack, started from different configs, is running at {running.url}; starting this "
        f"command's own servers with their head on port {port}."
    )
    return load_global_config([*argv, f"++head_server.port={port}"]), None
